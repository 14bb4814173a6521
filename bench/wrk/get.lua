-- GET /api/v1/tasks/{id}: ids each token's user may read (owner or assignee), rotated.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local requests, n = nil, 0

function init(args)
  requests = common.prepare(args[1], "get", "GET")
end

function request()
  n = n % #requests + 1
  return requests[n]
end

done = common.done
