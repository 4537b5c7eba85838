# /ota?op=commit (ota.py has the protocol and the layout): the spare tree is built from
# the manifest (files moved from staging, unchanged ones copied from the running tree,
# every one hash-checked), gets the board's own config.json and its version, and
# .ota/try names it: the switch. The board resets a moment later.
import json
import os
from hashlib import sha256

import otaconn
import otacore


class Job(otacore.Job):
    def line_in(self, line):
        if not self.mode:
            self.header(line, "commit")
            self.new_tree = "b" if self.tree == "a" else "a"
            self.dir = self.p + self.new_tree
            for t in ("a", "b"):  # trees not running: the one replaced last time, or stale
                if t != self.tree:
                    otacore.rmtree(self.p + t)
            otacore.mkdirs(self.dir + "/")
            self.manifest = open(self.dir + "/.manifest", "w")
            self.hash = sha256()
            return None
        if line == "end":
            return self.finish()
        path, n, sha = self.check(line)
        dst = self.dir + "/" + path
        otacore.mkdirs(dst)
        src = self.stage + "/" + path
        if otacore.has(src, n, sha, self.buf):
            os.rename(src, dst)
        elif not otacore.has(self.run + path, n, sha, self.buf, dst):
            raise ValueError("missing: " + path)
        line += "\n"
        self.manifest.write(line)
        self.hash.update(line)
        return None

    def finish(self):
        from binascii import hexlify

        self.mode = None
        self.manifest.close()
        version = str(hexlify(self.hash.digest()), "ascii")[:12]
        if version != self.version:
            raise ValueError("version: " + version)
        with open("config.json") as f:
            cfg = json.load(f)
        cfg.setdefault("server", {}).update(self.set)  # the board's own, with --set's keys
        with open(self.dir + "/config.json", "w") as f:
            json.dump(cfg, f)
        with open(self.dir + "/.ringws-version", "w") as f:
            f.write(version + "\n")
        otacore.rmtree(self.stage)  # what is left there the build does not have
        ota = self.ota
        # The switch: .ota/try appears by one rename (boot.py reads it).
        with open(self.p + "try.tmp", "w") as f:
            f.write("%s %d\n" % (self.new_tree, ota.confirm_ms))
        otacore.rmtree(self.p + "try")
        os.rename(self.p + "try.tmp", self.p + "try")
        ota.last = {"result": "switching", "from": ota.version, "to": version}
        with open(self.p + "last", "w") as f:
            json.dump(ota.last, f)
        print("ota: switching to tree", self.new_tree, version)
        ota.srv.add_timer(400, otaconn.reset)
        return {"t": "switch", "tree": self.new_tree, "version": version}

