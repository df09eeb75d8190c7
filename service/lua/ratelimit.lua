-- Rate limits (GCRA), all or nothing: every key is checked first, then all are charged.
-- KEYS[i]  tw:{p}:rl:<kind>:<id>, all in one partition; value: theoretical arrival time (ms)
-- ARGV     three per key: 3i-2 emission interval in ms (1000 / rate), 3i-1 burst,
--          3i cost (1 = charge one request, 0 = only check that one more would pass)
-- Returns  one wait in ms per key, 0 when that key is within its limit. Nothing is written
--          unless every wait is 0, so a refused request costs no other limit anything.
-- The clock is the server's (TIME): every replica charging one key meets one clock.
-- A key expires when its bucket is full again, so nothing needs cleaning.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waits, tats = {}, {}
local ok = true
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then
    tat = now
  end
  local wait = tat + interval * math.max(cost, 1) - now - interval * burst
  if wait > 0 then
    ok = false
    waits[i] = wait
  else
    waits[i] = 0
  end
  tats[i] = tat + interval * cost
end
if ok then
  for i = 1, #KEYS do
    if tats[i] > now then
      redis.call('SET', KEYS[i], string.format('%d', tats[i]), 'PX', string.format('%d', tats[i] - now))
    end
  end
end
return waits
