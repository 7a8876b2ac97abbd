-- wrk script for bench_ingest.py: POST one msgpack update per request, each with its own
-- session token (sessions are single-use; a replay would be acknowledged without work).
--   wrk -s upload.lua <url> -- <head file> <tokens file> <threads> [cycle]
-- The head file holds the update map minus its last entry; the request body is
-- head .. "session" .. <token>. Thread i sends tokens i, i+threads, ... and, once its
-- share is used up, requests a path that answers 404 so the run is visibly invalid
-- ("cycle": start over instead, for the bare baseline, which ignores the token).

local thread_index = 0

function setup(thread)
  thread:set("tid", thread_index)
  thread_index = thread_index + 1
end

local head, tokens, next_token, step, request_line, cycle

function init(args)
  local f = assert(io.open(args[1], "rb"))
  head = f:read("*a")
  f:close()
  tokens = {}
  for line in io.lines(args[2]) do
    tokens[#tokens + 1] = line
  end
  step = tonumber(args[3])
  cycle = args[4] == "cycle"
  next_token = tid + 1
  -- the request head is built here once, so each request costs one concatenation
  request_line = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port
    .. "\r\nContent-Type: application/msgpack\r\nAccept: application/msgpack\r\n"
    .. "Content-Length: "
end

local function msgpack_str(s)
  local n = #s
  if n < 32 then
    return string.char(0xa0 + n) .. s
  elseif n < 256 then
    return string.char(0xd9, n) .. s
  end
  return string.char(0xda, math.floor(n / 256), n % 256) .. s
end

function request()
  local token = tokens[next_token]
  if token == nil and cycle then
    next_token = tid + 1
    token = tokens[next_token]
  end
  if token == nil then
    return wrk.format("GET", "/__sessions_exhausted__")
  end
  next_token = next_token + step
  local tail = "\167session" .. msgpack_str(token)
  return request_line .. (#head + #tail) .. "\r\n\r\n" .. head .. tail
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
