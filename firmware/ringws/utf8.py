# Incremental UTF-8 validation: text is checked as it arrives, across fragment and read
# boundaries, and rejected at the first byte that cannot be part of valid UTF-8 (overlong
# forms, surrogates and code points above U+10FFFF included; MicroPython's own decoder
# accepts all three).
from ringws.kernels import UTF8_ACCEPT, UTF8_REJECT, utf8_step, utf8_valid


class Utf8Validator:
    def __init__(self):
        self.state = UTF8_ACCEPT

    def reset(self):
        self.state = UTF8_ACCEPT

    def feed(self, buf, start, end):
        """Validate buf[start:end]; False as soon as the text cannot be valid."""
        if self.state != UTF8_REJECT:
            self.state = utf8_step(buf, start, end, self.state)
        return self.state != UTF8_REJECT

    def complete(self):
        """True when everything fed so far ends on a character boundary."""
        return self.state == UTF8_ACCEPT


def is_valid(data):
    # The protocol's own check (kernels.utf8_valid); the board does not load this module.
    return utf8_valid(data)
