"""The README's code is run, not just read."""

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_first_lines_are_the_two_commands():
    head = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(head) == 2
    assert head[0].endswith("eosflow run") and "pip install" in head[0]
    assert head[1].endswith("pytest") and "[test]" in head[1]


def test_sharpness_recipe_runs_and_tracks_lambda1(capsys):
    (recipe,) = [b for b in _python_blocks() if "def train" in b]
    namespace: dict = {}
    exec(recipe, namespace)
    A = jnp.diag(jnp.linspace(0.1, 3.0, 40))  # lambda_1 = 3 wherever the loss is evaluated

    def loss_fn(p, batch):  # the recipe's loss_fn(params, batch), filled in
        return 0.5 * p["w"] @ batch["A"] @ p["w"] + 0.25 * jnp.sum(p["b"] ** 4)

    namespace["loss_fn"] = loss_fn
    params = {"w": jnp.ones(40), "b": jnp.full(3, 0.1)}
    namespace["train"](params, {"A": A}, steps=5, lr=0.1)
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 5
    lams = np.array([float(r[2]) for r in rows])
    np.testing.assert_allclose(lams, 3.0, rtol=1e-3)
    etas = np.array([float(r[3]) for r in rows])
    np.testing.assert_allclose(etas, 0.3, rtol=1e-3)


def test_sharpness_recipe_finds_a_top_direction_orthogonal_to_its_first_start(capsys):
    """lambda_1 = 20 lies along (1, -1, 0, ...), orthogonal to a start of ones
    (cleverhans-lab/cleverhans#1012); the recipe starts from an empty block (zeros: the
    solver's fresh direction) and then passes back the whole warm start. Oracle: dense eigh at
    every iterate, the iterates rebuilt by the same SGD steps."""
    import jax
    from jax.flatten_util import ravel_pytree

    (recipe,) = [b for b in _python_blocks() if "def train" in b]
    namespace: dict = {}
    exec(recipe, namespace)
    d = jnp.asarray(np.random.default_rng(8).uniform(0.0, 5.0, 58))

    def loss_fn(p, batch):
        quad = 5.0 * (p["a"][0] - p["a"][1]) ** 2 + 0.5 * jnp.sum(batch["d"] * p["y"] ** 2)
        return quad + 0.25 * jnp.sum(p["y"] ** 4)

    namespace["loss_fn"] = loss_fn
    params = {"a": jnp.array([0.3, -0.2]), "y": jnp.full(58, 0.5)}
    lr, steps = 0.05, 4
    namespace["train"](params, {"d": d}, steps=steps, lr=lr)
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    got = np.array([float(r[2]) for r in rows])
    want = []
    p = params
    for _ in range(steps):
        flat, unravel = ravel_pytree(p)
        want.append(jnp.linalg.eigvalsh(
            jax.hessian(lambda z: loss_fn(unravel(z), {"d": d}))(flat))[-1])
        p = jax.tree.map(lambda x, g: x - lr * g, p, jax.grad(loss_fn)(p, {"d": d}))
    np.testing.assert_allclose(got, np.array(want), atol=1e-3)


def test_custom_optimizer_recipe_runs_and_records_its_edge(tmp_path, monkeypatch, capsys):
    (recipe,) = [b for b in _python_blocks() if "optimizer=tx" in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(recipe, namespace)
    record = namespace["record"]
    assert record.status == "completed" and record.steps_done == 200
    # the comment in the recipe states what it prints
    want = recipe.split("# ")[-1].strip()
    assert capsys.readouterr().out.strip() == want
    # the recorded edge is the one the step obeys: 2/eta for a GD step eta = 0.05
    eff = record.metrics["eff_lr"]
    eff = eff[np.isfinite(eff)]  # nan once the gradient is exactly zero (the toy converges)
    assert len(eff) > 100
    np.testing.assert_allclose(eff, 0.05, rtol=1e-12)


def test_what_the_command_line_accepts_is_what_the_readme_says():
    """The optimizer table names exactly the --optimizer choices; the warm-up ones are
    stated after it."""
    from eosflow.runner import choices

    text = README.read_text()
    section = text.split("### Adaptive optimizers", 1)[1].split("**From Python**", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    named = {n for line in table for n in re.findall(r"`([a-z_]+)`", line.split("|")[1])}
    assert named == set(choices("optimizer"))
    warm = " or ".join(f"`{n}`" for n in choices("warmup_optimizer"))
    assert f"{warm} for `--warmup_optimizer`" in " ".join(section.split())
