-- Create a session and index it under its user, atomically.
-- KEYS[1] session hash   tw:{p}:s:<sid>
-- KEYS[2] user index     tw:{p}:u:<sub>   (zset sid -> absolute expiry ms)
-- KEYS[3] user cut-off   tw:{p}:dc:<sub>  (read only: the caller must not mint iat <= it)
-- KEYS[4] boot marker    tw:{p}:boot      (set if missing, so every token minted after a wipe
--                                          is at or after the marker; no TTL, see service/store.py)
-- ARGV[1] now ms, ARGV[2] session expires at ms (min(idle, absolute)), ARGV[3] absolute expiry ms,
-- ARGV[4] sid, ARGV[5..] field, value pairs of the session hash (layout in service/store.py)
-- Returns the user's cut-off (epoch s) or false.
local now = tonumber(ARGV[1])
local absolute = tonumber(ARGV[3])
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('SET', KEYS[4], string.format('%d', math.floor(now / 1000)), 'NX')
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], absolute, ARGV[4])
-- The index lives as long as its longest-lived session (Redis 6.2 has no EXPIRE GT).
local pttl = redis.call('PTTL', KEYS[2])
if pttl < 0 or now + pttl < absolute then
  redis.call('PEXPIREAT', KEYS[2], ARGV[3])
end
return redis.call('GET', KEYS[3])
