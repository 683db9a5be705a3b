-- wrk script: POST /predict?user_id=N with N cycling over known users.
local max_user = tonumber(os.getenv("BENCH_MAX_USER") or "1000")
-- BENCH_QUERY is appended to every request ("&explain=true").
local extra = os.getenv("BENCH_QUERY") or ""
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/predict?user_id=" .. ((n % max_user) + 1) .. extra)
end
