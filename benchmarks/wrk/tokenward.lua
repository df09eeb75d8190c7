-- wrk script for the Tokenward suite (one wrk thread; the suite never uses more).
--
-- wrk -t1 -cN -dNs --latency -s tokenward.lua <url> -- METHOD WHERE VALUE [HEADER ...]
--   METHOD  GET | POST
--   WHERE   "none"            no token (ceilings, session creation with a static body)
--           "bearer"          VALUE is one token, sent as Authorization: Bearer on every request
--           "bearer-file"     VALUE is a file, one token a line; each request takes the NEXT line
--           "form:<prefix>"   VALUE is one token; body = <prefix><token> (form-urlencoded)
--           "form-file:<prefix>"  as above, a new line of VALUE per request (single-use tokens)
--           "body"            VALUE is a file whose whole content is the (static) body
--   HEADER  extra "Name: value" headers (client Basic auth, Connection: close, Content-Type)
--
-- File modes never reuse a line: when the file runs out the last token is re-sent and
-- counted as "exhausted", which the suite treats as an invalid figure. Every status
-- outside 200-299 is counted (wrk itself only counts >= 400). done() prints one line:
-- WRKJSON {...}

local thread_ref = nil

function setup(thread)
   thread_ref = thread
end

local method, where, value
local prefix = nil
local file_mode = false
local tokens = {}
local ntokens = 0
local idx = 1

non2xx = 0
used = 0
exhausted = 0
first_err = ""

function init(args)
   method, where, value = args[1], args[2], args[3]
   wrk.method = method
   for i = 4, #args do
      local name, v = string.match(args[i], "^([^:]+):%s*(.*)$")
      if name then
         wrk.headers[name] = v
      end
   end
   if where == "bearer-file" or where:sub(1, 10) == "form-file:" then
      file_mode = true
      for line in io.lines(value) do
         if #line > 0 then
            ntokens = ntokens + 1
            tokens[ntokens] = line
         end
      end
   end
   if where:sub(1, 5) == "form:" then
      prefix = where:sub(6)
      wrk.body = prefix .. value
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   elseif where:sub(1, 10) == "form-file:" then
      prefix = where:sub(11)
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   elseif where == "bearer" then
      wrk.headers["Authorization"] = "Bearer " .. value
   elseif where == "body" then
      local fh = io.open(value, "rb")
      wrk.body = fh:read("*a")
      fh:close()
   end
end

function request()
   if not file_mode then
      return wrk.format()
   end
   local tok
   if idx > ntokens then
      exhausted = exhausted + 1
      tok = tokens[ntokens]
   else
      tok = tokens[idx]
   end
   idx = idx + 1
   used = used + 1
   if prefix then
      return wrk.format(nil, nil, nil, prefix .. tok)
   end
   return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tok})
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
   local t = thread_ref
   local e = summary.errors
   local out = string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d},' ..
      '"non2xx":%d,"used":%d,"exhausted":%d,"first_err":%s}',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max,
      t:get("non2xx") or 0, t:get("used") or 0, t:get("exhausted") or 0, jstr(t:get("first_err") or ""))
   io.write("WRKJSON " .. out .. "\n")
end
