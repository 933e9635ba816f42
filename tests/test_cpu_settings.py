"""The CPU handlers' switch (hanet_jax/ops/cpu/settings.py) is part of jax's jit key, and the
environment's override is read once, at start-up."""

import jax
import jax.numpy as jnp
import pytest
from _train_helpers import run_python

from hanet_jax import ops
from hanet_jax.ops.cpu import conv as cpu_conv
from hanet_jax.ops.cpu import settings, targets

needs_handler = pytest.mark.skipif(not cpu_conv.available(), reason="no C++ compiler / scipy OpenBLAS")


def _handlers_in(text: str) -> list[str]:
    return sorted(t for t in targets.ALL if t in text)


@needs_handler
def test_a_jitted_function_is_traced_again_under_another_setting():
    traces = []

    @jax.jit
    def loss(x, k):
        traces.append(settings.current().handlers)
        return jnp.sum(ops.conv2d(x, k) ** 2)

    x, k = jnp.ones((1, 16, 16, 16)), jnp.ones((3, 3, 16, 16))
    grad = jax.jit(jax.grad(loss, argnums=1))
    on = float(loss(x, k))
    assert _handlers_in(grad.lower(x, k).as_text())
    with settings.disabled():
        off = float(loss(x, k))                 # a cache hit would reuse the handlers' trace
        assert _handlers_in(grad.lower(x, k).as_text()) == []
    assert _handlers_in(grad.lower(x, k).as_text())
    assert traces[:2] == [True, False]
    assert off == pytest.approx(on, rel=1e-5)


def test_using_rejects_an_unknown_knob():
    with pytest.raises(TypeError):
        with settings.using(no_such_knob=1):
            pass


START_UP = """
    import os, json
    import jax, jax.numpy as jnp
    from hanet_jax import ops
    from hanet_jax.ops.cpu import settings, targets
    os.environ[settings.HANDLERS_ENV] = {late!r}   # after start-up: ignored
    f = jax.jit(jax.grad(lambda k, x: jnp.sum(ops.conv2d(x, k) ** 2)))
    text = f.lower(jnp.ones((3, 3, 16, 16)), jnp.ones((1, 16, 16, 16))).as_text()
    print(json.dumps({{"handlers": settings.current().handlers,
                      "found": sorted(t for t in targets.ALL if t in text)}}))
"""


@needs_handler
@pytest.mark.parametrize("at_start,late,expected", [("0", "1", False), ("1", "0", True)])
def test_the_environment_is_read_once_at_start_up(at_start, late, expected):
    import json

    done = run_python(START_UP.format(late=late), timeout=300, **{settings.HANDLERS_ENV: at_start})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["handlers"] is expected
    assert bool(out["found"]) is expected
