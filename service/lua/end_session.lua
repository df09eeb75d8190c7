-- End one session (logout) and deny its access tokens.
-- KEYS[1] session hash tw:{p}:s:<sid>   KEYS[2] user index tw:{p}:u:<sub>
-- KEYS[3] session deny tw:{p}:ds:<sid>  KEYS[4] event counter  KEYS[5] event stream
-- ARGV: 1 now ms, 2 sid, 3 mode, 4 mode argument, 5 deny until ms, 6 reason,
--       7 event retention ms, 8 channel, 9 partition
-- Modes: 'token' (4 the tag key the caller verified the presented refresh token's tag under:
--                 any generation of this session's tokens ends it, one the store never saw
--                 included; a session the store does not know has its sid denied all the
--                 same, since its access tokens may outlive what the store forgot),
--        'owner' (4 sub: the session must belong to that user), 'admin' (no check).
-- Returns the session's sub when it was ended, '' when (token mode) the session was not
-- there and its sid was denied, false when nothing matched.
local s = KEYS[1]
local now = tonumber(ARGV[1])
local mode = ARGV[3]
local f = redis.call('HMGET', s, 'u', 'h', 'k', 'K')
if not f[1] then
  if mode == 'token' then
    tw_revoke(KEYS[3], KEYS[4], KEYS[5], ARGV[8], tonumber(ARGV[9]), 'sid', ARGV[2], 0,
      tonumber(ARGV[5]), now, ARGV[6], tonumber(ARGV[7]))
    return ''
  end
  return false
end
if mode == 'token' then
  -- The tag key: 'K', or in sessions of the older layout 'k', else the first secret's hash.
  if ARGV[4] ~= (f[4] or f[3] or f[2]) then
    return false
  end
elseif mode == 'owner' then
  if ARGV[4] ~= f[1] then
    return false
  end
end
redis.call('DEL', s)
redis.call('ZREM', KEYS[2], ARGV[2])
tw_revoke(KEYS[3], KEYS[4], KEYS[5], ARGV[8], tonumber(ARGV[9]), 'sid', ARGV[2], 0,
  tonumber(ARGV[5]), now, ARGV[6], tonumber(ARGV[7]))
return f[1]
