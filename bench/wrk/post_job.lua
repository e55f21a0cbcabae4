-- POST /jobs with a trivial job; uids spread over 1000 users.
-- ORQ_AUTH (optional) is sent as the Authorization header.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("ORQ_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
local fixed_uid = os.getenv("ORQ_UID")
local n = 0
request = function()
  n = n + 1
  local uid = fixed_uid or tostring(n % 1000 + 1)
  local body = '{"uid": ' .. uid .. ', "code": "print(1)", "input": ""}'
  return wrk.format(nil, "/jobs", nil, body)
end
