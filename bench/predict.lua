-- wrk script: POST /predict?user_id=ID over known users: 1..BENCH_MAX_USER,
-- or the ids listed one per line in BENCH_IDS (string ids, e.g. UUIDs).
local max_user = tonumber(os.getenv("BENCH_MAX_USER") or "1000")
-- BENCH_QUERY is appended to every request ("&explain=true").
local extra = os.getenv("BENCH_QUERY") or ""
-- BENCH_RANDOM=1 draws users uniformly (no cache-friendly order), else cycles.
local random = os.getenv("BENCH_RANDOM") == "1"
local ids = nil
local file = os.getenv("BENCH_IDS")
if file and file ~= "" then
  ids = {}
  for line in io.lines(file) do ids[#ids + 1] = line end
  max_user = #ids
end
local n = 0
request = function()
  n = n + 1
  local i = random and math.random(1, max_user) or ((n % max_user) + 1)
  local user = ids and ids[i] or i
  return wrk.format("POST", "/predict?user_id=" .. user .. extra)
end
