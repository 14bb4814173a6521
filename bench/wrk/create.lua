-- POST /api/v1/tasks: several users, varied bodies (half name an assignee).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua").scenario("create", "POST", { ["Content-Type"] = "application/json" })
