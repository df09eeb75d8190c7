-- Deny one access token by jti (or any deny entry that ends no session).
-- KEYS[1] deny key tw:{p}:dj:<jti>  KEYS[2] event counter  KEYS[3] event stream
-- ARGV: 1 now ms, 2 kind, 3 id, 4 before s, 5 until ms, 6 reason, 7 retention ms,
--       8 channel, 9 partition
-- Returns the event's seq, or 0 when the token has expired already (nothing to deny).
return tw_revoke(KEYS[1], KEYS[2], KEYS[3], ARGV[8], tonumber(ARGV[9]), ARGV[2], ARGV[3],
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[1]), ARGV[6], tonumber(ARGV[7]))
