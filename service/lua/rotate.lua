-- Spend a refresh token: check and swap in one step.
-- KEYS[1] session hash tw:{p}:s:<sid>    KEYS[2] session deny tw:{p}:ds:<sid>
-- KEYS[3] event counter tw:{p}:seq       KEYS[4] event stream tw:{p}:ev
-- KEYS[5] signals stream tw:{p}:sg
-- (A revoked sid stays in its user's index until it is pruned: readers skip missing sessions.)
-- ARGV: 1 now ms, 2 presented generation, 3 presented hash, 4 the tag key the caller verified
--       the token's tag under (so the token is authentic when it is this session's key),
--       5 successor hash, 6 successor secret sealed under the presented secret,
--       7 grace ms, 8 grace uses, 9 client id ('' = any), 10 requested scope ('' = same),
--       11 deny until ms, 12 event retention ms, 13 channel, 14 partition, 15 sid,
--       16 caller ip, 17 caller network, 18 caller agent ('' = unknown), 19 anomaly policy
--       (allow | flag | revoke), 20 burst window s, 21 burst limit, 22 signals channel
-- Returns one of
--   {1, gen, tag key, '', sub, client, scope, claims, absolute ms, expires ms, reasons}  rotated
--   {2, gen, tag key, sealed, sub, client, scope, claims, absolute ms, expires ms, reasons}
--                     grace: same successor again
--                     (reasons: anomalies flagged, comma-separated, '' when none)
--   {4, ...}          as 1, from a generation ahead of the stored one: the store lost
--                     rotations (a failover), the authentic token moves the session forward
--   {0, 'invalid' | 'expired' | 'scope'}                                       refused, nothing touched
--   {-1, 'reused'}                                                             family revoked
--   {-2, reasons}     an anomaly under the revoke policy: session ended, tokens denied
-- Authenticity: every token's tag is checked by the caller (an HMAC, which Lua cannot
-- compute) under the tag key it read, and the key is compared here; the tag key never
-- changes for a session. So a token is accepted only whole (a prefix with a made-up tag
-- is refused whatever its generation), a forged token never ends anybody's session, and
-- a generation the store never saw can be trusted. The current and the previous secret
-- are also known by hash: an authentic token whose secret differs is a fork, refused.
-- Hashes and the tag key are raw bytes (16 each), the sealed successor too (24); 'la' and
-- 'it' (idle TTL) in seconds, 'ax' and 'pt' in ms ('pe', the deadline in ms, and an explicit
-- 'la'/'rw'/'rc' come from sessions written before: still read). Derived fields (store.py):
-- 'k' absent = 'h' (generation 0), 'la' absent = 'pt' (else 'ca'), 'nw' absent = the /24
-- of the latest dotted-quad address, 'rw'/'rc' absent = the window 'pt' opened, one refresh.
-- Hashes are compared with plain string equality: they are SHA-256 of 192-bit random
-- secrets, so timing could at most reveal a prefix of a stored hash, which does not help
-- to find a secret hashing to it; constant-time comparison would buy nothing here.
local s = KEYS[1]
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', s, 'g', 'h', 'k', 'p', 'pe', 'pn', 'pc', 'ax', 'it', 'u', 'c', 'sc', 'x',
  'ri', 'ru', 'nw', 'rw', 'rc', 'ua', 'ip', 'pt', 'la', 'K')
if not f[1] then
  -- Gone: expired (idle or absolute TTL) or ended; once the key is gone Redis cannot tell which.
  return {0, 'expired'}
end
local g = tonumber(f[1])
local pg = tonumber(ARGV[2])
local absolute = tonumber(f[8])
-- 'K' is a random tag key no token holder can compute. Sessions written before it tag under
-- 'k', or until their first rotation under the first secret's hash ('h'), which the holder of
-- the first token can compute: their tags tell a rotated token from a forged one, but cannot
-- vouch for a generation the store never saw.
local tag_key = f[23] or f[3] or f[2]
if ARGV[4] ~= tag_key then
  return {0, 'invalid'}
end
if now >= absolute then
  return {0, 'expired'}
end
if ARGV[9] ~= '' and ARGV[9] ~= f[11] then
  return {0, 'invalid'}
end
-- A narrower scope may be asked for; checked only once the token is known to be good.
local function scope_ok()
  local granted = {}
  for w in string.gmatch(f[12] or '', '%S+') do granted[w] = true end
  for w in string.gmatch(ARGV[10], '%S+') do
    if not granted[w] then return false end
  end
  return true
end
local claims = f[13] or ''
local scope = f[12] or ''
local idle_ms = tonumber(f[9]) * 1000
local now_s = math.floor(now / 1000)
local policy = ARGV[19]

-- The network anomalies.derived_network gives: the /24 of a dotted quad, else ''. Where it
-- is the network of the latest address, 'nw' is not stored (the common case).
local function v4net(ip)
  local head = ip and string.match(ip, '^(%d+%.%d+%.%d+)%.%d+$')
  return head and (head .. '.0/24') or ''
end

-- Record where this refresh came from; compare with the previous one (anomalies.py).
-- Only the first refresh over the burst limit in a window flags, so a burst is one signal.
local function observe(counting)
  local reasons, set, del = {}, {}, {}
  local ip, net, ua = ARGV[16], ARGV[17], ARGV[18]
  -- Until the first refresh, the login's device (ua, and the network of its ip) is the baseline.
  local last_ip, last_ua = f[14] or f[20], f[15] or f[19]
  local last_net = f[16] or v4net(last_ip)
  if policy ~= 'allow' then
    if net ~= '' and last_net ~= '' and last_net ~= net then table.insert(reasons, 'network') end
    if ua ~= '' and last_ua and last_ua ~= ua then table.insert(reasons, 'agent') end
  end
  -- ri/ru are kept only while they differ from the login's device: most sessions refresh
  -- from where they logged in, and memory per session is the product's cost.
  local function remember(field, value, last, device)
    if value == '' or value == last then return end
    if value == device then
      table.insert(del, field)
    else
      table.insert(set, field); table.insert(set, value)
    end
  end
  remember('ri', ip, last_ip, f[20])
  remember('ru', ua, last_ua, f[19])
  if ip ~= '' then
    local want = net ~= '' and net or last_net
    if want ~= v4net(ip) then
      if want ~= f[16] then table.insert(set, 'nw'); table.insert(set, want) end
    elseif f[16] then
      table.insert(del, 'nw')
    end
  end
  if counting and policy ~= 'allow' then
    local rw, rc = 0, 0
    if f[17] then
      rw, rc = tonumber(f[17]), tonumber(f[18] or 0)
    elseif f[21] then
      rw, rc = math.floor(tonumber(f[21]) / 1000), 1
    end
    if now_s - rw >= tonumber(ARGV[20]) then
      rw, rc = now_s, 0
    end
    rc = rc + 1
    -- A window this rotation opens is implied by 'pt' (set below): the common case stores nothing.
    if rc == 1 then
      if f[17] then table.insert(del, 'rw') end
      if f[18] then table.insert(del, 'rc') end
    else
      table.insert(set, 'rw'); table.insert(set, rw); table.insert(set, 'rc'); table.insert(set, rc)
    end
    if rc == tonumber(ARGV[21]) + 1 then table.insert(reasons, 'burst') end
  end
  if #set > 0 then redis.call('HSET', s, unpack(set)) end
  if #del > 0 then redis.call('HDEL', s, unpack(del)) end
  return reasons
end

-- Act on anomalies: nil to go on, or the script's reply when the session ends.
local function act(reasons)
  if #reasons == 0 then return nil end
  local joined = table.concat(reasons, ',')
  if policy == 'revoke' then
    redis.call('DEL', s)
    tw_revoke(KEYS[2], KEYS[3], KEYS[4], ARGV[13], tonumber(ARGV[14]), 'sid', ARGV[15], 0,
      tonumber(ARGV[11]), now, 'refresh_anomaly', tonumber(ARGV[12]))
    return {-2, joined}
  end
  local retention = tonumber(ARGV[12])
  local sig = cjson.encode({v = 1, kind = 'refresh_anomaly', action = 'flag', p = tonumber(ARGV[14]),
    sid = ARGV[15], sub = f[10], reasons = reasons, ip = ARGV[16], ua = ARGV[18], at = now})
  local xid = redis.call('XADD', KEYS[5], 'MINID', '~', string.format('%d', now - retention), '*', 'e', sig)
  redis.call('PEXPIRE', KEYS[5], retention)
  redis.call('PUBLISH', ARGV[22], string.sub(sig, 1, -2) .. ',"xid":"' .. xid .. '"}')
  return nil
end

-- Spend the token of generation pg (the current one, or one the store lost) for pg + 1.
local function rotate(status)
  if not scope_ok() then
    return {0, 'scope'}
  end
  local reasons = observe(true)
  local stop = act(reasons)
  if stop then return stop end
  local ng = pg + 1
  -- 'pt' (rotation time) stands for the grace deadline, the last use and the burst window.
  local set = {'g', ng, 'h', ARGV[5], 'p', ARGV[3], 'pt', now, 'pc', ARGV[6]}
  if not (f[3] or f[23]) then table.insert(set, 'k'); table.insert(set, f[2]) end
  redis.call('HSET', s, unpack(set))
  -- No grace use yet (an absent 'pn' counts as 0); 'pe' and 'la' are implied by 'pt' now.
  local del = {}
  for i, name in pairs({[5] = 'pe', [6] = 'pn', [22] = 'la'}) do
    if f[i] then table.insert(del, name) end
  end
  if #del > 0 then redis.call('HDEL', s, unpack(del)) end
  local expires = math.min(now + idle_ms, absolute)
  redis.call('PEXPIREAT', s, expires)
  return {status, ng, tag_key, '', f[10], f[11], scope, claims, absolute, expires, table.concat(reasons, ',')}
end

if pg == g then
  if ARGV[3] ~= f[2] then
    return {0, 'invalid'}
  end
  return rotate(1)
end

if pg > g and f[23] then
  -- Authentic, yet never recorded: the rotations that issued it were acknowledged by a
  -- primary whose writes a failover discarded. Accepted once; its second use meets the
  -- previous-generation rules (grace, then reuse detection) like any rotated token.
  return rotate(4)
end
if pg > g then
  return {0, 'invalid'}  -- a session of the older layout: see 'K' above
end
if pg == g - 1 then
  if ARGV[3] ~= f[4] then
    -- Authentic but not the secret this session recorded: a fork after lost writes.
    -- Refused, nothing ended: an honest second tab can get here.
    return {0, 'invalid'}
  end
  -- Sessions written before 'pt' carry the deadline itself ('pe').
  local deadline = f[5] and tonumber(f[5]) or tonumber(f[21]) + tonumber(ARGV[7])
  if now < deadline then
    if tonumber(f[6] or 0) >= tonumber(ARGV[8]) then
      return {0, 'invalid'}
    end
    if not scope_ok() then
      return {0, 'scope'}
    end
    local reasons = observe(false)
    local stop = act(reasons)
    if stop then return stop end
    redis.call('HINCRBY', s, 'pn', 1)
    redis.call('HSET', s, 'la', now_s)
    local expires = math.min(now + idle_ms, absolute)
    redis.call('PEXPIREAT', s, expires)
    return {2, g, tag_key, f[7], f[10], f[11], scope, claims, absolute, expires, table.concat(reasons, ',')}
  end
end

-- An authentic, already rotated token (outside the grace window, or older): theft. End
-- this session (only this one) and deny every access token it minted.
redis.call('DEL', s)
tw_revoke(KEYS[2], KEYS[3], KEYS[4], ARGV[13], tonumber(ARGV[14]), 'sid', ARGV[15], 0,
  tonumber(ARGV[11]), now, 'refresh_token_reuse', tonumber(ARGV[12]))
return {-1, 'reused'}
