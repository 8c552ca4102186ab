"""A command-line trainable speaking rung's JSON-lines protocol, the way a program in any language would.

It counts one per step from the checkpoint it resumes from (a text file holding the count) up to the
budget, reporting and checkpointing each step. With "fail" in its config it exits 2 after a stderr line.
"""

import json
import os
import sys

config = json.loads(os.environ["RUNG_CONFIG"])
directory = os.environ["RUNG_CHECKPOINT_DIR"]
resume_from = os.environ.get("RUNG_RESUME_FROM")
start = int(float(os.environ["RUNG_RESUME_STEP"]))
counter = int(open(resume_from).read()) if resume_from else 0

print("starting: this line is not protocol")
print(json.dumps({"note": "nor is this: it has no step"}))
for step in range(start + 1, int(os.environ["RUNG_BUDGET"]) + 1):
    counter += 1
    print(json.dumps({"step": step, "counter": counter, "lr": config["lr"], "text": "ignored",
                      "trial": int(os.environ["RUNG_TRIAL"]), "attempt": int(os.environ["RUNG_ATTEMPT"])}))
    name = f"count-{step}.txt"
    with open(os.path.join(directory, name + ".tmp"), "w") as file:
        file.write(str(counter))
    os.rename(os.path.join(directory, name + ".tmp"), os.path.join(directory, name))
    print(json.dumps({"checkpoint": name, "step": step}))
if config.get("fail"):
    print("something went wrong", file=sys.stderr)
    print("boom: the last stderr line", file=sys.stderr)
    sys.exit(2)
