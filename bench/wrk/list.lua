-- GET /api/v1/tasks?limit=20 as regular users (tokens rotated).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua").scenario("list", "GET")
