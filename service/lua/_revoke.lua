-- Shared prelude, prepended to every script that revokes: the one code path that
-- writes a deny entry and its event together, so neither exists without the other.
--
-- tw_revoke(deny_key, seq_key, stream_key, channel, partition, kind, id, before_s,
--           until_ms, now_ms, reason, retention_ms) -> seq or 0
--   deny_key   KEYS entry for the deny marker (tw:{p}:dj:<jti> | ds:<sid> | dc:<sub>)
--   value      sub: before (epoch s, tokens with iat <= before are denied); jti/sid: 1, since
--              the key's expiry says until when (a small integer is one of Redis's shared
--              objects, so the value costs no allocation: 16 of a deny key's ~133 bytes)
--   until_ms   when the last token the entry could match stops verifying
-- An entry that could match nothing (until <= now) is not written and has no event.
local function tw_emit(seq_key, stream_key, channel, partition, kind, id, before_s, until_ms, now_ms, reason, retention_ms)
  local seq
  if redis.call('EXISTS', seq_key) == 1 then
    seq = redis.call('INCR', seq_key)
  else
    -- A fresh counter starts from the clock (us resolution), so a counter that expired
    -- with its stream never goes backwards: subscribers see a jump and reload.
    seq = now_ms * 1000
    redis.call('SET', seq_key, string.format('%d', seq))
  end
  redis.call('PEXPIRE', seq_key, retention_ms)
  local ev = string.format(
    '{"v":1,"seq":%d,"p":%d,"kind":"%s","id":%s,"before":%d,"until":%d,"at":%d,"reason":%s}',
    seq, partition, kind, cjson.encode(id), before_s, math.floor(until_ms / 1000), now_ms, cjson.encode(reason))
  local xid = redis.call('XADD', stream_key, 'MINID', '~', string.format('%d', now_ms - retention_ms), '*', 'e', ev)
  redis.call('PEXPIRE', stream_key, retention_ms)
  redis.call('PUBLISH', channel, string.sub(ev, 1, -2) .. ',"xid":"' .. xid .. '"}')
  return seq
end

local function tw_revoke(deny_key, seq_key, stream_key, channel, partition, kind, id, before_s, until_ms, now_ms, reason, retention_ms)
  if until_ms <= now_ms then
    return 0
  end
  -- Whole seconds, rounded up: readers recover until from PTTL (docs/events.md §2).
  until_ms = math.ceil(until_ms / 1000) * 1000
  local value = '1'
  if kind == 'sub' then
    value = string.format('%d', before_s)
  end
  redis.call('SET', deny_key, value, 'PXAT', string.format('%d', until_ms))
  return tw_emit(seq_key, stream_key, channel, partition, kind, id, before_s, until_ms, now_ms, reason, retention_ms)
end
