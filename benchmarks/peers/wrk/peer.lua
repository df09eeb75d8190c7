-- wrk script shared by all peer benchmarks.
--
-- wrk ... -s peer.lua <url> -- MODE WHERE VALUE OFFSET METHOD NTHREADS
--   MODE    "static": VALUE is the token used for every request
--           "file":   VALUE is a file with one token per line; every request
--                     consumes a NEW token (single-use refresh tokens).
--                     Thread i (0-based) uses lines OFFSET+1+i, +NTHREADS, ...
--   WHERE   "header"       -> Authorization: Bearer <token>
--           "body:<field>" -> JSON body {"<field>": "<token>"}
--   METHOD  HTTP method (GET/POST)
--
-- Every non-2xx response is counted (wrk itself only counts >= 400), and
-- done() prints one machine-readable line:  WRKJSON {...}

local threads = {}
local thread_counter = 0

function setup(thread)
   thread:set("id", thread_counter)
   thread_counter = thread_counter + 1
   table.insert(threads, thread)
end

local tokens = {}
local ntokens = 0
local mode, where, value, method
local field = nil
local idx, stride

non2xx = 0
used = 0
exhausted = 0
first_err = ""

local function body_for(tok)
   return '{"' .. field .. '":"' .. tok .. '"}'
end

function init(args)
   mode, where, value = args[1], args[2], args[3]
   local offset = tonumber(args[4] or "0")
   method = args[5] or "GET"
   stride = tonumber(args[6] or "1")
   if where:sub(1, 5) == "body:" then
      field = where:sub(6)
      wrk.headers["Content-Type"] = "application/json"
   end
   if mode == "file" then
      for line in io.lines(value) do
         if #line > 0 then
            ntokens = ntokens + 1
            tokens[ntokens] = line
         end
      end
      idx = offset + 1 + id
   else
      if field then
         wrk.body = body_for(value)
      else
         wrk.headers["Authorization"] = "Bearer " .. value
      end
   end
   wrk.method = method
end

function request()
   if mode ~= "file" then
      return wrk.format()
   end
   local tok
   if idx > ntokens then
      -- Out of pre-generated tokens: flag it and re-send the last one (it
      -- will be rejected, so this can never inflate the numbers).
      exhausted = exhausted + 1
      tok = tokens[ntokens]
   else
      tok = tokens[idx]
   end
   idx = idx + stride
   used = used + 1
   if field then
      return wrk.format(method, nil, nil, body_for(tok))
   end
   return wrk.format(method, nil, {["Authorization"] = "Bearer " .. tok})
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_err == "" then
         first_err = tostring(status) .. " " .. string.sub(body or "", 1, 200)
      end
   end
end

local function jstr(s)
   s = tostring(s)
   s = s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('[%c]', ' ')
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local t_non2xx, t_used_max, t_exhausted, err = 0, 0, 0, ""
   for _, thread in ipairs(threads) do
      t_non2xx = t_non2xx + (thread:get("non2xx") or 0)
      local u = thread:get("used") or 0
      if u > t_used_max then t_used_max = u end
      t_exhausted = t_exhausted + (thread:get("exhausted") or 0)
      local e = thread:get("first_err") or ""
      if err == "" and e ~= "" then err = e end
   end
   local e = summary.errors
   local out = string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"min":%d},' ..
      '"non2xx":%d,"used_max_per_thread":%d,"exhausted":%d,"first_err":%s}',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.mean, latency.stdev,
      latency.max, latency.min,
      t_non2xx, t_used_max, t_exhausted, jstr(err))
   io.write("WRKJSON " .. out .. "\n")
end
