"""Session-wide test setup."""

import signal

# A shell starts a background job with SIGINT ignored, and an ignored signal survives exec: every
# infw a test starts would then ignore the Ctrl-C that tests such as events --follow send it.
# A Python handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
