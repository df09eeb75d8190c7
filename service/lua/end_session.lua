-- End one session (logout) and deny its access tokens.
-- KEYS[1] session hash tw:{p}:s:<sid>   KEYS[2] user index tw:{p}:u:<sub>
-- KEYS[3] session deny tw:{p}:ds:<sid>  KEYS[4] event counter  KEYS[5] event stream
-- ARGV: 1 now ms, 2 sid, 3 mode, 4..6 mode arguments, 7 deny until ms, 8 reason,
--       9 event retention ms, 10 channel, 11 partition
-- Modes: 'token' (4 gen, 5 hash: the current or the previous refresh token),
--        'key' (4 tag key: the session must still be the one whose old token was replayed),
--        'owner' (4 sub: the session must belong to that user), 'admin' (no check).
-- Returns the session's sub when it was ended, false when nothing matched.
local s = KEYS[1]
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', s, 'u', 'g', 'h', 'k', 'p')
if not f[1] then
  return false
end
local mode = ARGV[3]
if mode == 'token' then
  -- Raw 16-byte SHA-256 prefixes of 192-bit random secrets: plain equality is fine here,
  -- timing cannot help anyone find a secret whose hash matches.
  local pg = tonumber(ARGV[4])
  local g = tonumber(f[2])
  if not ((pg == g and ARGV[5] == f[3]) or (pg == g - 1 and ARGV[5] == f[5])) then
    return false
  end
elseif mode == 'key' then
  -- An absent tag key is the first secret's hash (generation 0, see store.py).
  if ARGV[4] ~= (f[4] or f[3]) then
    return false
  end
elseif mode == 'owner' then
  if ARGV[4] ~= f[1] then
    return false
  end
end
redis.call('DEL', s)
redis.call('ZREM', KEYS[2], ARGV[2])
tw_revoke(KEYS[3], KEYS[4], KEYS[5], ARGV[10], tonumber(ARGV[11]), 'sid', ARGV[2], 0,
  tonumber(ARGV[7]), now, ARGV[8], tonumber(ARGV[9]))
return f[1]
