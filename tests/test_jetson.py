"""Jetson detection and tegrastats power sampling, checked without a Jetson.

Every tegrastats, nv_tegra_release, nvpmodel and jetson_clocks text below is copied verbatim
from the public file named above it, where it appears as output captured on a board; the
expected values were read off each line by hand. What this cannot check, without a Jetson:
that a live tegrastats on each release prints these shapes, and that the total chosen for
a board really is its input power.
"""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from emonas_edge.errors import UserError
from emonas_edge.profile.jetson import (
    TegrastatsSampler,
    is_jetson,
    jetson_info,
    parse_jetson_clocks,
    parse_l4t_release,
    parse_nvpmodel,
    parse_tegrastats_line,
)

# --- L4T R32 / JetPack 4 -------------------------------------------------------------------------

# Jetson Nano, two cores powered down, GR3D without frequency (tegrastats run without root).
# NewChromantics/PopEngine, src/TApiPlatform.cpp (comment above Nvidia::TPlatformStat)
R32_NANO_OFF = (
    "RAM 1901/3956MB (lfb 183x4MB) SWAP 0/1978MB (cached 0MB) CPU [8%@102,6%@102,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% PLL@38.5C CPU@41.5C PMIC@100C GPU@41.5C AO@48C thermal@41.75C "
    "POM_5V_IN 1154/1544 POM_5V_GPU 0/43 POM_5V_CPU 119/205"
)
# Jetson Nano with IRAM field. DataDog/datadog-agent,
# pkg/collector/corechecks/nvidia/jetson/jetson_test.go (nanoSample)
R32_NANO_IRAM = (
    "RAM 534/3964MB (lfb 98x4MB) SWAP 5/1982MB (cached 1MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [16%@204,9%@204,0%@204,0%@204] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@34C CPU@36.5C "
    "PMIC@100C GPU@36C AO@39.5C thermal@36.25C POM_5V_IN 1022/1022 POM_5V_GPU 0/0 POM_5V_CPU 204/204"
)
# Jetson TX2 (L4T R28/R32), VDD_IN listed among its rails. Same DataDog file (tx2Sample).
TX2 = (
    "RAM 2344/7852MB (lfb 1154x4MB) SWAP 0/3926MB (cached 0MB) CPU [1%@345,off,off,1%@345,0%@345,2%@345] "
    "EMC_FREQ 4%@1600 GR3D_FREQ 0%@624 APE 150 PLL@37.5C MCPU@37.5C PMIC@100C Tboard@32C GPU@35C "
    "BCPU@37.5C thermal@36.5C Tdiode@34.25C VDD_SYS_GPU 152/152 VDD_SYS_SOC 687/687 VDD_4V0_WIFI 0/0 "
    "VDD_IN 3056/3056 VDD_SYS_CPU 152/152 VDD_SYS_DDR 883/883"
)
# Jetson AGX Xavier (JetPack 4/5): rails named GPU/CPU/SOC/CV/VDDRQ/SYS5V, no input rail.
# Same DataDog file (agXSample).
AGX_XAVIER = (
    "RAM 721/31927MB (lfb 7291x4MB) SWAP 0/15963MB (cached 0MB) "
    "CPU [2%@1190,0%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0%@665 GR3D_FREQ 0%@318 APE 150 "
    "MTS fg 0% bg 0% AO@37.5C GPU@37.5C Tdiode@40C PMIC@100C AUX@36C CPU@37.5C thermal@36.9C Tboard@37C "
    "GPU 0/0 CPU 311/311 SOC 932/932 CV 0/0 VDDRQ 621/621 SYS5V 1482/1482"
)

# --- L4T R35 / JetPack 5 -------------------------------------------------------------------------

# Jetson AGX Orin 64GB on JetPack 5.1 (the post installs the jp/v51 PyTorch wheel): already has
# the leading date, mW units, two NC channels, GR3D2_FREQ. catid/blog2022, content/posts/orin_opt.md
R35_AGX_ORIN = (
    "04-24-2023 00:01:24 RAM 1282/62795MB (lfb 15152x4MB) SWAP 0/31398MB (cached 0MB) "
    "CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 0%@0 GR3D2_FREQ 0%@0 VIC_FREQ 729 APE 174 CV0@-256C CPU@42.593C "
    "Tboard@32C SOC2@39.343C Tdiode@33.25C SOC0@39.375C CV1@-256C GPU@-256C tj@42.593C SOC1@40.468C "
    "CV2@-256C VDD_GPU_SOC 2399mW/2399mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 4032mW/4032mW NC 0mW/0mW "
    "VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)

# --- L4T R36 / JetPack 6 -------------------------------------------------------------------------

# Jetson AGX Orin, "R36 (release), REVISION: 4.4" per the test's comment; instantaneous and
# average differ on VIN_SYS_5V0. lesomnus/tegra-exporter, stats/parse_test.go (second case)
R36_AGX_ORIN = (
    "05-09-2026 18:42:07 RAM 18202/62841MB (lfb 466x4MB) SWAP 86/31420MB (cached 0MB) "
    "CPU [16%@1949,6%@1761,4%@1222,4%@2201,4%@1036,33%@1036,0%@1036,40%@1036,3%@1190,46%@1190,6%@1190,2%@1190] "
    "EMC_FREQ 3%@2133 GR3D_FREQ 0%@[0,0] NVENC 78%@166 NVDEC off NVJPG off NVJPG1 off VIC 32%@115 OFA off "
    "NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.343C soc2@48.343C soc0@49.062C tj@52.343C "
    "soc1@49.531C VDD_GPU_SOC 2412mW/2412mW VDD_CPU_CV 1607mW/1607mW VIN_SYS_5V0 4607mW/4657mW"
)
# Jetson AGX Orin 32GB, R36, with tegrastats' irregular padding between fields.
# DataDog/datadog-agent, pkg/collector/corechecks/nvidia/jetson/jetson_test.go (r36Sample)
R36_AGX_ORIN_PADDED = (
    "RAM 29114/30697MB (lfb 3x4MB)    SWAP 4915/15348MB (cached 1MB) "
    "CPU [3%@729,4%@729,0%@729,1%@729,0%@2201,100%@2201,1%@2201,0%@2201,100%@2201,0%@2201,0%@2201,0%@2201] "
    "EMC_FREQ 1%@2133 GR3D_FREQ 0%@[305,305] NVENC      off  NVDEC    off NVJPG off NVJPG1    off         "
    "VIC        off          OFA           off          NVDLA0    off       NVDLA1     off          "
    "PVA0_FREQ off         APE           174        cpu@53.062C soc2@48.25C soc0@48.843C  gpu@47.812C "
    "tj@53.062C soc1@48.968C    VDD_GPU_SOC 3205mW/3205mW VDD_CPU_CV 4405mW/4405mW VIN_SYS_5V0 4767mW/4767mW"
)
# Jetson Orin Nano 8GB (7620MB), VDD_IN input rail. henrygd/beszel, agent/gpu_test.go
# (TestParseJetsonData: "orin nano" and "more valid data")
R36_ORIN_NANO_IDLE = (
    "06-18-2025 11:25:24 RAM 3452/7620MB (lfb 25x4MB) SWAP 1518/16384MB (cached 174MB) "
    "CPU [1%@1420,2%@1420,0%@1420,2%@1420,2%@729,1%@729] GR3D_FREQ 0% cpu@50.031C soc2@49.031C soc0@50C "
    "gpu@49.031C tj@50.25C soc1@50.25C VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW VDD_SOC 1475mW/1475mW"
)
R36_ORIN_NANO_BUSY = (
    "11-15-2024 08:38:09 RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB) "
    "CPU [15%@729,11%@729,14%@729,13%@729,11%@729,8%@729] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] "
    "NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@53.968C soc2@52.437C soc0@50.75C "
    "gpu@53.343C tj@53.968C soc1@51.656C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW "
    "VDD_SOC 2817mW/2817mW"
)


@pytest.mark.parametrize(
    "line, ram, cpu, gpu, rails, total, source",
    [
        (
            R32_NANO_OFF,
            (1901, 3956),
            [8, 6, None, None],
            0,
            {"POM_5V_IN": 1154, "POM_5V_GPU": 0, "POM_5V_CPU": 119},
            1154,
            "POM_5V_IN",
        ),
        (
            R32_NANO_IRAM,
            (534, 3964),
            [16, 9, 0, 0],
            0,
            {"POM_5V_IN": 1022, "POM_5V_GPU": 0, "POM_5V_CPU": 204},
            1022,
            "POM_5V_IN",
        ),
        (
            TX2,
            (2344, 7852),
            [1, None, None, 1, 0, 2],
            0,
            {
                "VDD_SYS_GPU": 152,
                "VDD_SYS_SOC": 687,
                "VDD_4V0_WIFI": 0,
                "VDD_IN": 3056,
                "VDD_SYS_CPU": 152,
                "VDD_SYS_DDR": 883,
            },
            3056,
            "VDD_IN",
        ),
        (
            AGX_XAVIER,
            (721, 31927),
            [2, 0, 0, 0, None, None, None, None],
            0,
            {"GPU": 0, "CPU": 311, "SOC": 932, "CV": 0, "VDDRQ": 621, "SYS5V": 1482},
            3346,
            "sum",
        ),
        (
            R35_AGX_ORIN,
            (1282, 62795),
            [0] * 12,
            0,
            {"VDD_GPU_SOC": 2399, "VDD_CPU_CV": 400, "VIN_SYS_5V0": 4032, "NC": 0, "VDDQ_VDD2_1V8AO": 301},
            2399 + 400 + 4032 + 301,
            "sum",
        ),
        (
            R36_AGX_ORIN,
            (18202, 62841),
            [16, 6, 4, 4, 4, 33, 0, 40, 3, 46, 6, 2],
            0,
            {"VDD_GPU_SOC": 2412, "VDD_CPU_CV": 1607, "VIN_SYS_5V0": 4607},
            2412 + 1607 + 4607,
            "sum",
        ),
        (
            R36_AGX_ORIN_PADDED,
            (29114, 30697),
            [3, 4, 0, 1, 0, 100, 1, 0, 100, 0, 0, 0],
            0,
            {"VDD_GPU_SOC": 3205, "VDD_CPU_CV": 4405, "VIN_SYS_5V0": 4767},
            12377,
            "sum",
        ),
        (
            R36_ORIN_NANO_IDLE,
            (3452, 7620),
            [1, 2, 0, 2, 2, 1],
            0,
            {"VDD_IN": 4824, "VDD_CPU_GPU_CV": 518, "VDD_SOC": 1475},
            4824,
            "VDD_IN",
        ),
        (
            R36_ORIN_NANO_BUSY,
            (6185, 7620),
            [15, 11, 14, 13, 11, 8],
            63,
            {"VDD_IN": 12479, "VDD_CPU_GPU_CV": 4667, "VDD_SOC": 2817},
            12479,
            "VDD_IN",
        ),
    ],
    ids=[
        "r32-nano-off",
        "r32-nano-iram",
        "tx2",
        "agx-xavier",
        "r35-agx-orin",
        "r36-agx-orin",
        "r36-agx-orin-padded",
        "r36-orin-nano-idle",
        "r36-orin-nano-busy",
    ],
)
def test_parse_tegrastats_line(line, ram, cpu, gpu, rails, total, source):
    got = parse_tegrastats_line(line + "\n")
    assert (got["ram_used_mb"], got["ram_total_mb"]) == ram
    assert got["cpu_util"] == cpu
    assert got["gpu_util"] == gpu
    assert got["rails"] == rails  # instantaneous values; RAM/SWAP/IRAM/APE/NVENC/temperatures are not rails
    assert got["total_power_mw"] == total
    assert got["power_source"] == source


def test_timestamp_is_kept_when_present():
    assert parse_tegrastats_line(R35_AGX_ORIN)["timestamp"] == "04-24-2023 00:01:24"
    assert parse_tegrastats_line(R36_ORIN_NANO_IDLE)["timestamp"] == "06-18-2025 11:25:24"
    assert parse_tegrastats_line(R32_NANO_OFF)["timestamp"] is None


@pytest.mark.parametrize("bad", ["", "   \n", "NVDEC off APE 25", "VDD_IN 4824mW/4824mW", "tegrastats: not permitted"])
def test_line_without_ram_is_a_one_line_value_error(bad):
    with pytest.raises(ValueError, match="no RAM field") as err:
        parse_tegrastats_line(bad)
    assert "\n" not in str(err.value)


# --- detection on fake roots ---------------------------------------------------------------------

# xulei-leon/particleML, docs/engineering/jetson-orin-nano-debugging.md (Orin Nano, JetPack 6.2.1)
R36_RELEASE = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    "# KERNEL_VARIANT: oot\n"
    "TARGET_USERSPACE_LIB_DIR=nvidia\n"
    "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
)
R36_NVPMODEL = "NV Power Mode: 25W\n1\n"  # same file, output of `nvpmodel -q`
# ay65535/dotfiles, local/share/jetson-nano/firstrun.sh (Jetson Nano, last JetPack 4 release)
R32_RELEASE = (
    "# R32 (release), REVISION: 7.6, GCID: 38171779, BOARD: t210ref, EABI: aarch64, "
    "DATE: Tue Nov  5 07:46:14 UTC 2024\n"
)


def _root(tmp_path, release=None, model=None):
    if release is not None:
        (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
        (tmp_path / "etc/nv_tegra_release").write_text(release)
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True, exist_ok=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model)
    return tmp_path


def test_orin_r36_root(tmp_path):
    root = _root(tmp_path, R36_RELEASE, b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    calls = []

    def run(cmd):
        calls.append(cmd)
        return R36_NVPMODEL if cmd[0] == "nvpmodel" else None  # jetson_clocks --show fails without root

    info = jetson_info(root, run=run)
    assert info == {
        "model": "NVIDIA Jetson Orin Nano Developer Kit",
        "l4t": "36.4.3",
        "nvpmodel": {"name": "25W", "id": 1},
        "jetson_clocks": None,
    }
    assert calls == [["nvpmodel", "-q"], ["jetson_clocks", "--show"]]
    assert is_jetson(root)


def test_nano_r32_root_without_tools(tmp_path):
    root = _root(tmp_path, R32_RELEASE, b"NVIDIA Jetson Nano Developer Kit\x00")
    # A fake root never runs this machine's tools: their fields are None, nothing raises.
    assert jetson_info(root) == {
        "model": "NVIDIA Jetson Nano Developer Kit",
        "l4t": "32.7.6",
        "nvpmodel": None,
        "jetson_clocks": None,
    }


def test_release_file_alone_is_enough(tmp_path):
    info = jetson_info(_root(tmp_path, R32_RELEASE), run=lambda cmd: None)
    assert info["model"] is None and info["l4t"] == "32.7.6"


def test_non_jetson_roots(tmp_path):
    assert jetson_info(tmp_path) is None and not is_jetson(tmp_path)
    pi = _root(tmp_path / "pi", model=b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert jetson_info(pi, run=lambda cmd: pytest.fail("no tool may run off a Jetson")) is None


def test_l4t_release_format():
    assert parse_l4t_release("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref") == "35.4.1"
    assert parse_l4t_release("garbage") is None and parse_l4t_release(None) is None


def test_nvpmodel_output():
    assert parse_nvpmodel(R36_NVPMODEL) == {"name": "25W", "id": 1}
    assert parse_nvpmodel("NV Power Mode: MAXN\n") == {"name": "MAXN", "id": None}
    assert parse_nvpmodel("") is None and parse_nvpmodel(None) is None


# `jetson_clocks --show` on AGX Orin, MAXN, clocks not pinned (CPU min 729600 < max 2201600).
# catid/blog2022, content/posts/orin_opt.md (first and GPU/EMC lines of the listing)
CLOCKS_ORIN_FREE = """\
SOC family:tegra234  Machine:Jetson AGX Orin
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0
NV Power Mode: MAXN
"""
# `./jetson_clocks.sh --show` on a TX1 after jetson_clocks: every Min == Max.
# hordiales/jetson-tx1-dev, SCRIPTS.md
CLOCKS_TX1_PINNED = """\
SOC family:tegra210  Machine:jetson_tx1
Online CPUs: 0-3
CPU Cluster Switching: Disabled
cpu0: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000
cpu1: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000
GPU MinFreq=998400000 MaxFreq=998400000 CurrentFreq=998400000
EMC MinFreq=12750000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1
"""


def test_jetson_clocks_show():
    assert parse_jetson_clocks(CLOCKS_ORIN_FREE) is False
    assert parse_jetson_clocks(CLOCKS_TX1_PINNED) is True
    assert parse_jetson_clocks("Error: Run this script(/usr/bin/jetson_clocks) as a root user") is None
    assert parse_jetson_clocks(None) is None


# --- the sampler, driven by a stand-in for tegrastats --------------------------------------------


def _fake_tegrastats(lines, ignore_sigterm=False):
    """A child that prints the given lines (plus noise it must skip), then idles until stopped."""
    script = textwrap.dedent(f"""
        import signal, sys, time
        if {ignore_sigterm!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for line in {list(lines)!r}:
            print(line, flush=True)
            time.sleep(0.02)
        while True:
            time.sleep(0.05)
    """)
    return [sys.executable, "-c", script]


def _wait_for(sampler, n, timeout=20.0):
    deadline = time.monotonic() + timeout
    while len(sampler.samples) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sampler.samples) == n


def test_sampler_summary_math():
    lines = [R36_ORIN_NANO_BUSY, "", R36_ORIN_NANO_IDLE, R36_ORIN_NANO_BUSY, R36_ORIN_NANO_IDLE]
    with TegrastatsSampler(command=_fake_tegrastats(lines)) as sampler:
        _wait_for(sampler, 4)
    stamps = [t for t, _ in sampler.samples]
    assert stamps == sorted(stamps) and sampler.skipped == 1
    assert sampler.window_s > 0

    s = sampler.summary(duration_s=2.0, inferences=40)
    avg = (12479 + 4824 + 12479 + 4824) / 4  # VDD_IN, the Orin Nano's input rail
    assert s["samples"] == s["power_samples"] == 4
    assert s["power_source"] == "VDD_IN"
    assert s["avg_power_mw"] == pytest.approx(avg)
    assert s["energy_j"] == pytest.approx(avg / 1000 * 2.0)
    assert s["energy_per_inference_mj"] == pytest.approx(avg * 2.0 / 40)  # = 432.575 mJ
    assert s["avg_gpu_util"] == pytest.approx((63 + 0 + 63 + 0) / 4)
    assert s["peak_ram_mb"] == 6185
    with pytest.raises(ValueError):
        sampler.summary(duration_s=2.0, inferences=0)


def test_sampler_kills_a_child_that_ignores_terminate():
    command = _fake_tegrastats([R32_NANO_OFF], ignore_sigterm=True)
    with TegrastatsSampler(command=command, stop_timeout_s=0.5) as sampler:
        _wait_for(sampler, 1)
        proc = sampler._proc
    assert proc.poll() is not None
    s = sampler.summary(duration_s=1.0, inferences=10)
    assert s["avg_power_mw"] == 1154 and s["energy_per_inference_mj"] == pytest.approx(115.4)


def test_sampler_without_power_samples_reports_none():
    sampler = TegrastatsSampler(command=["unused"])
    s = sampler.summary(duration_s=1.0, inferences=1)
    assert s["samples"] == 0 and s["avg_power_mw"] is None and s["energy_per_inference_mj"] is None


def test_missing_tegrastats_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="^tegrastats not found: "):
        with TegrastatsSampler(path=str(tmp_path / "tegrastats")):
            pytest.fail("must not enter")
