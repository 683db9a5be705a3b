-- wrk script: POST /predict?user_id=N over known users 1..BENCH_MAX_USER.
local max_user = tonumber(os.getenv("BENCH_MAX_USER") or "1000")
-- BENCH_QUERY is appended to every request ("&explain=true").
local extra = os.getenv("BENCH_QUERY") or ""
-- BENCH_RANDOM=1 draws users uniformly (no cache-friendly order), else cycles.
local random = os.getenv("BENCH_RANDOM") == "1"
local n = 0
request = function()
  n = n + 1
  local user = random and math.random(1, max_user) or ((n % max_user) + 1)
  return wrk.format("POST", "/predict?user_id=" .. user .. extra)
end
