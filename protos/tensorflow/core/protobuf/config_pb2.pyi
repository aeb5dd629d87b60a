from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RunOptions(_message.Message):
    __slots__ = ("timeout_in_ms",)
    TIMEOUT_IN_MS_FIELD_NUMBER: _ClassVar[int]
    timeout_in_ms: int
    def __init__(self, timeout_in_ms: _Optional[int] = ...) -> None: ...

class RunMetadata(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
