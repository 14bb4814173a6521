-- GET /api/v1/tasks?limit=20 as regular users (tokens rotated).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local requests, n = nil, 0

function init(args)
  requests = common.prepare(args[1], "list", "GET")
end

function request()
  n = n % #requests + 1
  return requests[n]
end

done = common.done
