-- POST /api/v1/tasks: several users, varied bodies (half name an assignee).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local requests, n = nil, 0

function init(args)
  requests = common.prepare(args[1], "create", "POST", { ["Content-Type"] = "application/json" })
end

function request()
  n = n % #requests + 1
  return requests[n]
end

done = common.done
