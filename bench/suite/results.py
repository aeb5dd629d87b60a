"""What a run found, as plain data for the targets and the report (and --json)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.suite.load import Sample
from bench.suite.many import ManyModels


@dataclass
class Cell:
    """One contender at one load, over all its slots. Per-request figures are means
    weighted by each slot's requests."""

    model: str
    clients: int
    contender: str
    sample: Sample = field(default_factory=Sample)
    stages: dict[str, float] = field(default_factory=dict)  # server-side means, ms
    client_cpu_ms: float = 0.0  # the benchmark process's CPU per request
    server_cpu_ms: float | None = None  # the server process tree's CPU per request
    batch: int = 1  # inputs per request

    @property
    def items_per_second(self) -> float:
        return self.sample.throughput * self.batch

    def add(self, sample: Sample, client_cpu: float, server_cpu: float | None,
            stages: dict[str, float]) -> None:
        before, weight = self.sample.count, sample.count
        self.sample.add(sample)
        total = max(self.sample.count, 1)

        def mix(old: float, new: float) -> float:
            return (old * before + new * weight) / total

        self.client_cpu_ms = mix(self.client_cpu_ms, client_cpu)
        if server_cpu is not None:
            self.server_cpu_ms = mix(self.server_cpu_ms or 0.0, server_cpu)
        for stage, value in stages.items():
            self.stages[stage] = mix(self.stages.get(stage, 0.0), value)


@dataclass
class ModelFacts:
    """Per model: payloads, what the light client would cost, whether outputs agreed."""

    request_bytes: int = 0
    response_bytes: int = 0
    encode_ms: float = 0.0  # onnx_serving.client building and serializing the request
    decode_ms: float = 0.0  # ... and parsing the response into arrays
    notes: list[str] = field(default_factory=list)


@dataclass
class Results:
    cells: list[Cell] = field(default_factory=list)
    sweep: list[Cell] = field(default_factory=list)  # ORT at batch sizes, one client
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, contender)
    facts: dict[str, ModelFacts] = field(default_factory=dict)
    many: ManyModels | None = None  # the many-models case, when run

    def cell(self, model: str, clients: int, contender: str) -> Cell | None:
        for cell in self.cells:
            if (cell.model, cell.clients, cell.contender) == (model, clients, contender):
                return cell
        return None

    def cells_of(self, model: str, contender: str) -> list[Cell]:
        return [c for c in self.cells if c.model == model and c.contender == contender]
