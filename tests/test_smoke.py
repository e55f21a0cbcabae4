"""The smallest end-to-end check: a job runs in the sandbox and its output comes back."""


def test_hello_job(open_server):
    job = open_server.run("print(input()[::-1])", input="olleh")
    assert job["status"] == "DONE"
    assert job["result"] == "hello\n"
    assert job["exit_code"] == 0
