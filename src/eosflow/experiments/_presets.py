"""Named experiments: the published ones and laptop-sized versions of them.

A preset is a set of overrides of :class:`Config`'s defaults with a one-line description;
``eosflow list`` prints them and ``eosflow run PRESET --field value`` runs one with changes.
"""

from dataclasses import dataclass, field
from typing import Any

from ..runner import Config, ConfigError, unknown_field_message

DEFAULT = "digits-gd"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    cpu_minutes: float | None = None  # rough wall time on 2 CPU cores, None: needs a GPU

    def config(self, **changes: Any) -> Config:
        unknown = [k for k in changes if k not in Config.__dataclass_fields__]
        if unknown:
            raise ConfigError(unknown_field_message(unknown[0]))
        return Config(**{"name": self.name, **self.overrides, **changes})


# Arora, Li & Panigrahi (2022, arXiv 2205.09745), their MNIST experiment and code: the
# authors' code trains GD at lr 0.01 and switches to normalized GD (or GD on sqrt L) at
# eta = 0.01 from the GD checkpoint of step 9001, for 120 000 steps; MSE without the 1/2.
_MNIST_PAPER = dict(
    problem="mlp", dataset="mnist", num_examples=1000, widths=(128,), activation="gelu",
    loss="mse_nohalf", lr=0.01, warmup_lr=0.01, warmup_steps=9000, steps=129_000,
    test_examples=1000, eig_every=100, chunk_steps=1000, eval_every=1000, trace_samples=10,
    reproject_steps=120, phi_every=12_000,
    # float32's floor of |grad L| on this net is ~1e-4, at the default gtol 1.6e-4: a
    # projection could stall there for minutes; 1e-3 moves lambda1 at Phi by 0.01%
    # (measured from the iterate 1000 NGD steps after the warm-up: 109.80 against 109.81)
    phi_gtol=1e-3,
)
# the same protocol (warm-up, eta, network, data) with 12 000 normalized-GD steps
_MNIST_PAPER_CPU = dict(_MNIST_PAPER, steps=21_000, reproject_steps=12, phi_every=3000)
_CIFAR_VGG = dict(
    problem="vgg11", dataset="cifar10", num_examples=5000, widths=(512, 512),
    activation="relu", freeze_last_layer=True, loss="mse", lr=0.25, steps=20_000,
    chunk_size=1000, eig_every=50, chunk_steps=200, eval_every=200, num_eigs=2,
)
_DIGITS_FLOW = dict(  # the digits MLP near its minimizers (Adam), then a flow optimizer
    lr=0.05, warmup_steps=3000, warmup_optimizer="adam", warmup_lr=1e-3, steps=6300,
    eig_every=20, chunk_steps=500, eval_every=100,
)
_COHEN_CIFAR = dict(
    problem="mlp", dataset="cifar10", num_examples=5000, widths=(200, 200),
    activation="tanh", loss="mse", optimizer="gd", lr=2 / 30, steps=20_000,
    eig_every=20, chunk_steps=500, eval_every=500,
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "digits-gd",
            "the default: full-batch GD on the digits MLP 64-200-200-10 (tanh, MSE), "
            "progressive sharpening then lambda1 ~ 2/eta",
            dict(lr=0.2, steps=400, eig_every=4, chunk_steps=100),
            cpu_minutes=0.5,
        ),
        Preset(
            "digits-gd-sweep",
            "Cohen et al.'s design on digits: GD at eta = 2/30 .. 2/90 "
            "(`eosflow sweep digits-gd-sweep --grid lr=2/30,2/50,2/70,2/90`)",
            dict(lr=2 / 30, steps=3000, eig_every=10, chunk_steps=500),
            cpu_minutes=4,
        ),
        Preset(
            "digits-ngd",
            "the paper's experiment on digits: 3000 Adam steps (lr 1e-3, loss ~3e-4: close to "
            "the minimizers), then normalized GD at eta 0.05; lambda1 falls along the flow "
            "(`eosflow sweep digits-ngd --grid lr=0.05,0.035`: the curves against eta^2 t/4 "
            "agree)",
            dict(_DIGITS_FLOW, optimizer="normalized_gd"),
            cpu_minutes=3,
        ),
        Preset(
            "digits-sqrt",
            "the same with GD on sqrt(MSE) after the Adam warm-up (lambda1 against eta^2 t/8)",
            dict(_DIGITS_FLOW, optimizer="sqrt_loss_gd"),
            cpu_minutes=3,
        ),
        Preset(
            "cohen-cifar",
            "Cohen et al. 2021: full-batch GD, fc-tanh (200, 200) on CIFAR-10-5k, MSE, "
            "eta = 2/30 "
            "(`eosflow sweep cohen-cifar --data_dir DIR --grid lr=2/30,2/50,2/70,2/90`)",
            _COHEN_CIFAR,
        ),
        Preset(
            "cohen-cifar-sgd",
            "the cohen-cifar net with mini-batch SGD (B = 32) at eta = 2/30: batch sharpness "
            "(64 batches) beside the full-batch lambda1 every 200 steps; compare batch sizes "
            "(`eosflow sweep cohen-cifar-sgd --data_dir DIR --grid batch_size=8,32,128`)",
            dict(_COHEN_CIFAR, steps=50_000, batch_size=32, eig_every=200, chunk_steps=1000,
                 eval_every=1000, test_examples=1000, batch_sharpness_batches=64,
                 minibatch_lambda_batches=4),
        ),
        Preset(
            "paper-mnist-ngd",
            "Arora et al. 2022: MNIST-1k MLP 784-128-10 GELU, MSE without 1/2, 9000 GD steps "
            "at lr 0.01, then 120 000 normalized GD steps at eta = 0.01 beside the "
            "re-projection flow, held-out test metrics; needs --data_dir",
            dict(_MNIST_PAPER, optimizer="normalized_gd"),
        ),
        Preset(
            "paper-mnist-ngd-cpu",
            "the paper's MNIST protocol sized for two CPU cores: 9000 GD steps, then 12 000 "
            "normalized GD steps at eta = 0.01 beside the re-projection flow, lambda1 at "
            "Phi(x_t) every 3000 steps (on Γ, lambda1 falls along the prediction); needs "
            "--data_dir",
            dict(_MNIST_PAPER_CPU, optimizer="normalized_gd"),
            cpu_minutes=20,
        ),
        Preset(
            "paper-mnist-sqrt",
            "Arora et al. 2022: MNIST-1k MLP, 9000 GD steps, then 120 000 steps of GD on "
            "sqrt(MSE) at eta = 0.01 beside the re-projection flow; needs --data_dir",
            dict(_MNIST_PAPER, optimizer="sqrt_loss_gd"),
        ),
        Preset(
            "paper-mnist-sqrt-cpu",
            "the paper's MNIST net with GD on sqrt(MSE) sized for two CPU cores: 9000 GD "
            "steps, the iterate moved onto Γ (start_on_gamma), then 40 000 steps at eta = "
            "0.00125 beside the re-projection flow, lambda1 at Phi(x_t) every 8000 steps (at "
            "the paper's eta = 0.01 the run lags its flow by ~40%: README); needs --data_dir",
            dict(_MNIST_PAPER, optimizer="sqrt_loss_gd", lr=0.00125, steps=49_000,
                 reproject_steps=16, phi_every=8000, start_on_gamma=True),
            cpu_minutes=20,
        ),
        Preset(
            "paper-cifar-vgg-ngd",
            "Arora et al. 2022: CIFAR-10-5k VGG-11 (avg pool, no BN, frozen last layer), "
            "normalized GD at eta = 0.25; needs --data_dir and a GPU",
            dict(_CIFAR_VGG, optimizer="normalized_gd"),
        ),
        Preset(
            "paper-cifar-vgg-sqrt",
            "Arora et al. 2022: CIFAR-10-5k VGG-11, GD on sqrt(MSE) at eta = 0.25; needs a GPU",
            dict(_CIFAR_VGG, optimizer="sqrt_loss_gd"),
        ),
        Preset(
            "toy-a-ngd",
            "toy A, L = (1 + x^2) y^2: normalized GD from (14.7, -3) with the flow prediction",
            dict(problem="toy_a", dataset="none", optimizer="normalized_gd", lr=0.05,
                 x0=(14.7, -3.0), steps=100_000, dtype="float64", phi_every=1000,
                 chunk_steps=10_000),
            cpu_minutes=0.5,
        ),
        Preset(
            "toy-a-sqrt",
            "toy A: GD on sqrt(L) from (14.7, 3) with the flow prediction",
            dict(problem="toy_a", dataset="none", optimizer="sqrt_loss_gd", lr=0.01,
                 x0=(14.7, 3.0), steps=40_000, dtype="float64", phi_every=400,
                 chunk_steps=10_000),
            cpu_minutes=0.5,
        ),
        Preset(
            "toy-a-figure1",
            "the paper's Figure 1: normalized GD on toy A at eta = 5 from (14.7, -3)",
            dict(problem="toy_a", dataset="none", optimizer="normalized_gd", lr=5.0,
                 x0=(14.7, -3.0), steps=200, dtype="float64", chunk_steps=200),
            cpu_minutes=0.2,
        ),
        Preset(
            "toy-b-ngd",
            "toy B: normalized GD; the y2 component dies out and X(tau) is tracked",
            dict(problem="toy_b", dataset="none", optimizer="normalized_gd", lr=0.02,
                 steps=40_000, dtype="float64", phi_every=400, chunk_steps=10_000),
            cpu_minutes=0.5,
        ),
        Preset(
            "toy-c-sqrt",
            "toy C, L = (ab - 1)^2 / 2: GD on sqrt(L) to the balanced point a = b",
            dict(problem="toy_c", dataset="none", optimizer="sqrt_loss_gd", lr=0.02,
                 steps=20_000, dtype="float64", phi_every=200, chunk_steps=10_000),
            cpu_minutes=0.5,
        ),
        Preset(
            "digits-sgd",
            "mini-batch SGD (B = 64) on the digits MLP at the default eta: batch sharpness "
            "(Andreyev & Beneventano) beside the full-batch lambda1; compare batch sizes with "
            "`eosflow sweep digits-sgd --grid batch_size=64,256`",
            dict(lr=0.2, steps=3000, batch_size=64, eig_every=50, chunk_steps=500,
                 eval_every=50, batch_sharpness_batches=16,
                 minibatch_lambda_batches=4),
            cpu_minutes=3,
        ),
        Preset(
            "digits-sgd-narrow",
            "mini-batch SGD (B = 64) on a narrow digits MLP 64-50-10 (tanh, MSE) at eta = 0.5, "
            "which cannot fit the digits quickly: batch sharpness within 15% of 2/eta for "
            "B = 64 and 256, lambda1 at 2/eta "
            "(`eosflow sweep digits-sgd-narrow --grid batch_size=64,256`)",
            dict(widths=(50,), lr=0.5, steps=6000, batch_size=64, eig_every=100,
                 chunk_steps=1000, eval_every=100, batch_sharpness_batches=16,
                 minibatch_lambda_batches=4),
            cpu_minutes=1,
        ),
        Preset(
            "mnist-sgd",
            "mini-batch SGD (B = 8) on 8192 MNIST digits with the Edge of Stochastic Stability "
            "authors' MLP 784-512-512-10 (ReLU, MSE, initial parameters x 0.2) at eta = 0.4: "
            "batch sharpness at 2/eta with lambda1 near half of it, lower for the smaller "
            "batch (`eosflow sweep mnist-sgd --data_dir DIR --grid batch_size=8,32`); needs "
            "--data_dir",
            dict(problem="mlp", dataset="mnist", num_examples=8192, subset="stratified",
                 widths=(512, 512), activation="relu", init_scale=0.2, loss="mse", lr=0.4,
                 steps=15_000, batch_size=8, eig_every=500, chunk_steps=1500,
                 eval_every=1500, test_examples=1000, batch_sharpness_batches=64),
            cpu_minutes=8,
        ),
        Preset(
            "digits-adam",
            "full-batch Adam (beta1 = 0.9) on the digits MLP: the preconditioned sharpness "
            "lambda1(P^-1 H) rises to and hovers at 38/eta (Cohen et al., arXiv 2207.14484); "
            "the raw lambda1 is recorded beside it",
            dict(optimizer="adam", momentum=0.9, lr=2e-3, steps=600, eig_every=10,
                 chunk_steps=100),
            cpu_minutes=4,
        ),
        Preset(
            "digits-rmsprop",
            "full-batch RMSProp (decay 0.9) on the digits MLP: lambda1(P^-1 H) at 2/eta; "
            "with a slower second moment, `eosflow run digits-rmsprop --decay 0.999`",
            dict(optimizer="rmsprop", lr=2e-3, steps=600, eig_every=10, chunk_steps=100),
            cpu_minutes=4,
        ),
        Preset(
            "digits-central",
            "the default run (GD at eta = 0.2 on the digits MLP) with its processes from one "
            "initialization: the midpoint iterates, gradient flow (stable) and the central "
            "flow (Cohen, Damian et al., arXiv 2410.24206), compared in figures/processes.png "
            "and the report; 2 Euler substeps per GD step (as accurate as 4, at 2.6x the cost "
            "of a tracked GD step)",
            dict(lr=0.2, steps=400, eig_every=4, chunk_steps=100, central_substeps=2,
                 processes=("discrete", "midpoint", "stable", "central")),
            cpu_minutes=10,
        ),
        Preset(
            "tiny",
            "a seconds-long digits run for smoke tests",
            dict(num_examples=200, widths=(16,), steps=40, lr=0.2, chunk_steps=20,
                 eval_every=10),
            cpu_minutes=0.1,
        ),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint} (eosflow list shows them)") from None


def preset_values(name: str) -> dict[str, Any]:
    """Every field's value in preset ``name``, unvalidated (a preset that needs ``data_dir``
    shows ``None`` there)."""
    preset = get_preset(name)
    defaults = {f: getattr(Config(), f) for f in Config.__dataclass_fields__}
    return {**defaults, "name": preset.name, **preset.overrides}


def preset_config(name: str | None, overrides: dict[str, Any]) -> Config:
    """The configuration of preset ``name`` (default: the default experiment) with overrides."""
    return get_preset(name or DEFAULT).config(**overrides)
