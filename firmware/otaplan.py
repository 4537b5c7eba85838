# /ota?op=plan (ota.py has the protocol): which files of a manifest the board lacks.
# It reads and hashes, and writes nothing.
import otacore


class Job(otacore.Job):
    def line_in(self, line):
        if not self.mode:
            self.header(line, "plan")
            self.need = []
            self.bytes = self.new = 0
            return None
        if line != "end":
            # Staged already, in the running tree (copied at commit), or to be sent.
            path, n, sha = self.check(line)
            if not otacore.has(self.stage + "/" + path, n, sha, self.buf):
                self.new += n
                if not otacore.has(self.run + path, n, sha, self.buf):
                    self.need.append(self.n)
                    self.bytes += n
            self.n += 1
            return None
        self.mode = None
        ota = self.ota
        room = otacore.free(ota.root)
        if self.new + 8192 > room:
            raise ValueError("room: %d %d" % (self.new, room))
        cfg = ota.srv.cfg  # the running server settings: does --set change any?
        return {"t": "plan", "need": self.need, "bytes": self.bytes, "free": room,
                "same_config": all(cfg.get(k) == self.set[k] for k in self.set),
                "version": ota.version}
