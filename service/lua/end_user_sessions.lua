-- Log a user out of every session ('all') or of every session but one ('others').
-- KEYS[1] user index tw:{p}:u:<sub>  KEYS[2] user cut-off tw:{p}:dc:<sub>
-- KEYS[3] event counter              KEYS[4] event stream
-- KEYS[5..] pairs: session hash tw:{p}:s:<sid>, session deny tw:{p}:ds:<sid>, one pair per ARGV sid
-- ARGV: 1 now ms, 2 mode, 3 sid to keep ('' = none), 4 deny until ms, 5 reason,
--       6 event retention ms, 7 channel, 8 partition, 9 sub, 10.. sids (as read from the index)
-- The caller read the index first; if a login slipped in since, the sets differ and
-- the script changes nothing and returns -1, so the caller reads again: a racing
-- login is either ended here or created after, never half.
-- Returns the number of sessions ended, or -1.
local now = tonumber(ARGV[1])
local n = #ARGV - 9
if redis.call('ZCARD', KEYS[1]) ~= n then
  return -1
end
for i = 1, n do
  if not redis.call('ZSCORE', KEYS[1], ARGV[9 + i]) then
    return -1
  end
end
local until_ms = tonumber(ARGV[4])
local retention = tonumber(ARGV[6])
local partition = tonumber(ARGV[8])
local ended = 0
if ARGV[2] == 'all' then
  for i = 1, n do
    ended = ended + redis.call('DEL', KEYS[3 + 2 * i])
  end
  redis.call('DEL', KEYS[1])
  -- One cut-off covers every access token of the user issued up to this second.
  tw_revoke(KEYS[2], KEYS[3], KEYS[4], ARGV[7], partition, 'sub', ARGV[9], math.floor(now / 1000),
    until_ms, now, ARGV[5], retention)
  return ended
end
for i = 1, n do
  local sid = ARGV[9 + i]
  if sid ~= ARGV[3] then
    redis.call('ZREM', KEYS[1], sid)
    if redis.call('DEL', KEYS[3 + 2 * i]) == 1 then
      ended = ended + 1
      tw_revoke(KEYS[4 + 2 * i], KEYS[3], KEYS[4], ARGV[7], partition, 'sid', sid, 0,
        until_ms, now, ARGV[5], retention)
    end
  end
end
return ended
