"""``adcsr_jax.xla_cpu``: the XLA:CPU defaults join ``XLA_FLAGS`` without overriding the user."""

from __future__ import annotations

from adcsr_jax import xla_cpu

FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def test_defaults_are_added_after_the_users_flags() -> None:
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_cpu.apply(env, machine="x86_64")
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {FLAG}="
    xla_cpu.apply(env, machine="x86_64")  # idempotent
    assert env["XLA_FLAGS"].count(FLAG) == 1


def test_the_users_setting_wins_and_can_switch_defaults_off() -> None:
    env = {"XLA_FLAGS": f"{FLAG}=convolution"}
    xla_cpu.apply(env, machine="AMD64")
    assert env["XLA_FLAGS"] == f"{FLAG}=convolution"
    off = {"ADCSR_XLA_DEFAULTS": "0"}
    assert not xla_cpu.apply(off, machine="x86_64") and "XLA_FLAGS" not in off
    arm: dict[str, str] = {}
    assert not xla_cpu.apply(arm, machine="aarch64") and "XLA_FLAGS" not in arm


def test_this_test_session_runs_with_the_defaults() -> None:
    import os
    import platform

    if platform.machine().lower() in xla_cpu.X86 and os.environ.get("ADCSR_XLA_DEFAULTS") != "0":
        assert f"{FLAG}=" in os.environ["XLA_FLAGS"].split()
