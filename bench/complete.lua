-- wrk script: POST /api/action/complete, each request with the token of a fresh user
-- (one completion per user, so neither the rate limit nor "already completed" interferes).
local tokens = {}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  local nthreads = tonumber(args[2])
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then tokens[#tokens + 1] = line end
    i = i + 1
  end
  next_token = 1
  body = '{"actionId":"verify-email"}'
end

function request()
  local token = tokens[next_token]
  if token == nil then
    token = tokens[1]  -- ran out: reuse (answers 400/429; the report counts non-2xx)
    next_token = 1
  end
  next_token = next_token + 1
  return wrk.format("POST", "/api/action/complete",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
