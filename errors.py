"""The errors ember raises at its users.

Every failure a user can cause (a bad model, a bad input, a bad schedule, a damaged artefact)
raises a subclass of `EmberError` whose message names the node, value or file involved and says
what to do. Catch `EmberError` to catch them all.
"""


class EmberError(Exception):
    """Base class of every error ember raises on purpose."""


class FrontendError(EmberError):
    """A model could not be imported: bad protobuf, missing initializer, cycle, unknown dtype,
    an unpinned symbolic shape, or a node whose attributes or inputs make no sense."""


class UnsupportedOpError(FrontendError):
    """The model uses operators ember has no converter for.

    `unsupported` maps each unsupported `(domain, op_type)` to the names of the nodes using it.
    """

    def __init__(self, message: str, unsupported: dict[tuple[str, str], list[str]]):
        super().__init__(message)
        self.unsupported = unsupported


class SpecializationNeeded(FrontendError):
    """A shape-deciding value (Reshape's shape, Slice's starts, Range's limit, ...) is computed
    from graph inputs, so the model cannot be compiled once for all their values.

    `inputs` names the graph inputs the value depends on. `ember.compile` catches it and
    returns a module that compiles once per distinct value of those inputs, at run time.
    """

    def __init__(self, message: str, inputs: tuple[str, ...]):
        super().__init__(message)
        self.inputs = inputs


class ShapeError(EmberError):
    """Shapes or dtypes that an operator cannot accept."""


class InputError(EmberError):
    """Inputs given to a compiled module do not match its signature."""


class TargetError(EmberError):
    """An unknown or unavailable compilation target."""


class IRError(EmberError):
    """An IR object that breaks the IR's invariants. This is a bug in ember (or in code that
    builds IR by hand), never the user's model: please report it with the printed IR."""


class ScheduleError(EmberError):
    """A schedule primitive applied where it cannot be: the message names the stage and axis."""


class CodegenError(EmberError):
    """A backend could not generate code for a kernel; names the kernel and the IR node."""


class ArtifactError(EmberError):
    """A saved module that cannot be loaded: a missing, truncated or corrupted file (the
    message names it and the mismatch), an artefact of another format version, or one built
    for CPU features this machine lacks."""
