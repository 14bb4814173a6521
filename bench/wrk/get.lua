-- GET /api/v1/tasks/{id}: ids each token's user may read (owner or assignee), rotated.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua").scenario("get", "GET")
