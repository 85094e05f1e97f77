"""The tracker role (`fleetd: tracker`): issues in, pull requests out, GitHub first.

base.py     the Tracker interface a Linear or GitLab tracker would implement, its records
github.py   GitHub's REST API (urllib): conditional requests, the rate-limit budget
logic.py    socket-free: plan() turns issues and tasks into actions; Schedule polls and
            backs off
sync.py     one poll carried out through the tracker and the control socket: claims,
            tasks, cancels, follow-ups from review comments
results.py  results back: push, find or open the pull request, comment, label
prompt.py   WORKFLOW.md front matter and template, or the built-in one
report.py   the pull request's and the comments' words
push.py     git push with the token in git's environment only
ledger.py   what the tracker claimed and reported (tracker/ledger.json)
process.py  the loop (`run()`), the status file for `fleetctl tracker`
"""
