-- wrk script: POST /api/auth/login as admin, the password from
-- BENCH_ADMIN_PASSWORD (bench/run sets it).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"username":"admin","password":"%s"}', os.getenv("BENCH_ADMIN_PASSWORD") or "")
