"""The one exception the client raises for what the agent or the socket says."""


class VramsealError(Exception):
    """A refusal by the agent or a failure to talk to it.

    ``kind`` is the protocol's error kind (docs/consumers.md): ``forbidden``,
    ``invalid``, ``version``, ``not_found``, ``exists``, ``integrity``,
    ``cancelled``, ``device_error``, ``too_many``, ``internal``, or one of
    the client's own:

    - ``unreachable``: nobody serves the socket, or the agent closed the
      connection (every lease held on it has ended);
    - ``timeout``: the agent did not answer in time (the connection is
      closed, since a late answer would be read as the next one's);
    - ``protocol``: the answer broke the protocol;
    - ``unsupported``: memory this client cannot use yet (CUDA).

    ``message`` says what happened; ``result`` is the verification result
    (a dict) when a verification found the memory changed.
    """

    def __init__(self, kind, message, result=None):
        super().__init__("%s: %s" % (kind, message))
        self.kind = kind
        self.message = message
        self.result = result
