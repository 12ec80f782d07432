"""aqa_cli.media.decoder on real bytes: videos encoded here with PyAV, and the real files in ../shared/data/videos."""

from __future__ import annotations

import errno
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from aqa_cli.media.decoder import FRAME_SIZE, VideoDecoder, decode_image
from aqa_cli.util.errors import AqaError
from tests.helpers import (
    SHARED_VIDEOS,
    number_frame,
    read_number,
    read_video,
    write_image,
    write_number_video,
)

SHAPE = (FRAME_SIZE[1], FRAME_SIZE[0], 3)


def encode_frames(path: Path, frames: list[av.VideoFrame], codec: str, rotation: int = 0) -> Path:
    """Encode already prepared frames (their format and colour range kept), optionally with a display
    rotation in the container, as a phone would store a portrait or upside-down clip."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, frames[0].format.name
        stream.codec_context.color_range = frames[0].color_range
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in [*frames, None]:
            for packet in stream.encode(frame):
                container.mux(packet)
    return path


class CountingScaler:
    """Wraps the decoder's scaler to count the frames that went through it."""

    def __init__(self, scaler):
        self.scaler, self.calls = scaler, 0

    def reformat(self, *args, **kwargs):
        self.calls += 1
        return self.scaler.reformat(*args, **kwargs)


def numbers(frames) -> list[int]:
    return [read_number(frame) for frame in frames]


# --- videos encoded by the tests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [
        ("mpeg4.mp4", "mpeg4", "yuv420p"),
        ("x264_bframes.mkv", "libx264", "yuv420p"),
        ("vp8.webm", "libvpx", "yuv420p"),
        ("mjpeg_full_range.avi", "mjpeg", "yuvj420p"),
        ("palette.gif", "gif", "rgb8"),  # decodes as bgra: the alpha channel must go
    ],
)
def test_every_frame_comes_back_in_order_at_171x128(tmp_path, name, codec, pix_fmt):
    path = write_number_video(tmp_path / name, first=500, count=40, codec=codec, pix_fmt=pix_fmt)
    frames, info, lost = read_video(path)
    assert frames.shape == (40, *SHAPE) and frames.dtype == np.uint8
    assert numbers(frames) == list(range(500, 540))
    assert (info.width, info.height, info.rotation, lost) == (176, 128, 0, 0)
    assert info.fps == pytest.approx(25)


def test_unwanted_frames_are_skipped_without_conversion_but_counted(tmp_path):
    path = write_number_video(tmp_path / "v.mp4", first=0, count=30)
    with VideoDecoder(path) as decoder:
        decoder._scaler = scaler = CountingScaler(decoder._scaler)
        out = list(decoder.frames(wanted=lambda i: i % 7 == 3))
    assert [index for index, _ in out] == list(range(30))
    kept = {index: frame for index, frame in out if frame is not None}
    assert sorted(kept) == [3, 10, 17, 24]
    assert {index: read_number(frame) for index, frame in kept.items()} == {3: 3, 10: 10, 17: 17, 24: 24}
    assert scaler.calls == 4


def test_native_and_custom_sizes(tmp_path):
    path = write_number_video(tmp_path / "v.mkv", first=7, count=5, codec="libx264")
    native, info, _ = read_video(path, size=None)
    assert native.shape == (5, 128, 176, 3) and (info.width, info.height) == (176, 128)
    small, _, _ = read_video(path, size=(60, 40))
    assert small.shape == (5, 40, 60, 3) and small.flags.c_contiguous
    assert numbers(native) == numbers(small) == list(range(7, 12))


@pytest.mark.parametrize("rotation", [90, -90, -180])  # as PyAV reports them
def test_display_rotation_is_applied_in_the_right_direction(tmp_path, rotation):
    # Store each frame turned the other way, so only the correct rotation shows the bars upright and in
    # order; rotating the wrong way mirrors the bits (90 vs -90) or turns them into horizontal stripes.
    turns = rotation // 90
    coded = [np.ascontiguousarray(np.rot90(number_frame(n), -turns)) for n in range(100, 110)]
    frames = [av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p") for rgb in coded]
    path = encode_frames(tmp_path / f"rot{rotation}.mp4", frames, "mpeg4", rotation=rotation)
    with VideoDecoder(path) as decoder:
        out = [frame for _, frame in decoder.frames()]
        assert decoder.info.rotation == rotation
        assert (decoder.info.width, decoder.info.height) == (176, 128)
    assert all(frame.shape == SHAPE and frame.flags.c_contiguous for frame in out)
    assert numbers(out) == list(range(100, 110))
    native, _, _ = read_video(path, size=None)
    assert native.shape == (10, 128, 176, 3) and numbers(native) == list(range(100, 110))


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [
        ("vp9_full.webm", "libvpx-vp9", "yuv420p"),
        ("x264_full.mkv", "libx264", "yuv420p"),
        ("mjpeg.avi", "mjpeg", "yuvj420p"),
    ],
)
def test_full_range_yuv_keeps_its_levels(tmp_path, name, codec, pix_fmt):
    rgb = np.full((64, 64, 3), 20, np.uint8)
    rgb[:, :32] = 240
    source = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    frames = [source.reformat(format=pix_fmt, dst_color_range="JPEG") for _ in range(3)]
    path = encode_frames(tmp_path / name, frames, codec)
    raw = next(av.open(str(path)).decode(video=0))
    luma = np.frombuffer(raw.planes[0], np.uint8).reshape(raw.height, -1)[:, : raw.width]
    # The file really is full range: the luma holds the RGB levels themselves; reading it as limited
    # range (16..235) would give 255 and 5, visibly off.
    assert abs(int(luma[32, 8]) - 240) <= 2 and abs(int(luma[32, 56]) - 20) <= 2
    assert (int(luma[32, 8]) - 16) * 255 / 219 > 250 and (int(luma[32, 56]) - 16) * 255 / 219 < 8
    out, _, _ = read_video(path, size=(32, 32))
    assert np.abs(out[:, 8:24, 2:12].astype(int) - 240).max() <= 3
    assert np.abs(out[:, 8:24, 20:30].astype(int) - 20).max() <= 3


def test_fps_from_pts_span_when_the_container_has_no_rate(tmp_path):
    path = write_number_video(tmp_path / "v.nut", first=0, count=10, fps=20)  # NUT stores no average rate
    with VideoDecoder(path) as decoder:
        assert decoder.info.fps is None and decoder.info.frame_count is None
        assert sum(1 for _ in decoder.frames(wanted=lambda i: False)) == 10
        assert decoder.info.fps == pytest.approx(20)


def test_frames_can_be_iterated_once(tmp_path):
    with VideoDecoder(write_number_video(tmp_path / "v.mp4", first=0, count=3)) as decoder:
        assert len(list(decoder.frames())) == 3
        with pytest.raises(RuntimeError):
            next(decoder.frames())


@pytest.mark.parametrize("name", ["still.png", "still.jpg"])
def test_decode_image(tmp_path, name):
    path = write_image(tmp_path / name, number_frame(1234, width=640, height=480))
    image = decode_image(path)
    assert image.shape == SHAPE and image.dtype == np.uint8 and read_number(image) == 1234
    assert decode_image(path, size=None).shape == (480, 640, 3)


def test_decoding_does_not_import_torch():
    code = "import sys, aqa_cli.media.decoder; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- bad inputs ---------------------------------------------------------------------------------------


def _mux_garbage(path: Path) -> Path:
    """A valid Matroska file whose MJPEG packets are not JPEG: it opens, but no frame decodes."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for pts in range(3):
            packet = av.Packet(b"not a jpeg " * 20)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, pts, pts, Fraction(1, 25)
            container.mux(packet)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "missing.mp4", "no such file"),
    "directory": (lambda d: (d / "clips.mp4").mkdir() or d / "clips.mp4", "directory"),
    "empty": (lambda d: _write(d / "empty.mp4", b""), "empty"),
    "not_a_video": (lambda d: _write(d / "notes.mp4", b"just some text, renamed\n" * 20), "cannot open"),
    "audio_only": (lambda d: _audio_only(d / "speech.m4a"), "no video stream"),
    "nothing_decodes": (lambda d: _mux_garbage(d / "garbage.mkv"), "no video frame could be decoded"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    make, says = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(AqaError) as raised:
        read_video(path)
    message = str(raised.value)
    assert path.name in message and says in message and "\n" not in message


def test_unreadable_image_is_an_aqa_error(tmp_path):
    path = _write(tmp_path / "photo.jpg", b"\xff\xd8 truncated jpeg")
    with pytest.raises(AqaError, match="photo.jpg"):
        decode_image(path)


def test_read_error_mid_file_is_an_aqa_error(tmp_path, monkeypatch):
    path = write_number_video(tmp_path / "flaky.mp4", first=0, count=20)
    real_open = av.open

    class FailingDisk:
        """A real container whose reads fail after a few packets, as a failing disk would."""

        def __init__(self, *args, **kwargs):
            self._container = real_open(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._container, name)

        def demux(self, stream):
            for count, packet in enumerate(self._container.demux(stream)):
                if count == 5:
                    raise av.error.OSError(errno.EIO, "Input/output error")
                yield packet

    monkeypatch.setattr(av, "open", FailingDisk)
    with pytest.raises(AqaError, match=r"flaky\.mp4: reading failed \(Input/output error\)"):
        read_video(path)


# --- real files -----------------------------------------------------------------------------------------


@pytest.fixture
def videos() -> Path:
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"real test videos not found at {SHARED_VIDEOS} (they live outside the repository)")
    return SHARED_VIDEOS


REAL = {  # name: (frames decoded, header count, average fps), from SOURCES.md
    "aqa_streamlit_054_diving.avi": (103, 103, 30),
    "mtlaqa_diving_sample.gif": (21, 21, 10),
    "i3d_v_CricketShot_g04_c01_rgb.gif": (79, 79, 25),
    "decord_flipping_a_pancake.mkv": (310, None, 30),
    "decord_video_0.mov": (3, 3, 30),
    "decord_video_90.mov": (3, 3, 30),
    "decord_corrupted.mp4": (49, 50, 10),
    "mmaction2_test.avi": (164, 164, 25),
    "mmaction2_test_video_structuralize.mp4": (300, 300, 30000 / 1001),
    "moviepy_big_buck_bunny_0_30.webm": (720, None, 24),
    "moviepy_no_duration.webm": (74, None, 15000 / 1001),  # VFR, no duration in the container
    "moviepy_fire2.mp4": (25, 25, 750000 / 71393),  # VFR; base_rate is 90000
}


@pytest.mark.parametrize("name", REAL)
def test_real_file_decodes_every_frame(videos, name):
    count, header, fps = REAL[name]
    with VideoDecoder(videos / name) as decoder:
        out = list(decoder.frames(wanted=lambda i: i % 10 == 0))
        assert decoder.info.frame_count == header and decoder.info.fps == pytest.approx(fps, rel=1e-6)
        assert (decoder.frames_lost > 0) == (name == "decord_corrupted.mp4")
    assert [index for index, _ in out] == list(range(count))
    assert all(frame.shape == SHAPE and frame.dtype == np.uint8 for _, frame in out[::10])


def _best_match(patch: np.ndarray, image: np.ndarray) -> float:
    """Highest normalised cross-correlation of `patch` over every position in `image` (both grey)."""
    windows = sliding_window_view(image, patch.shape)
    mean = windows.mean(axis=(2, 3), keepdims=True)
    std = windows.std(axis=(2, 3), keepdims=True) + 1e-6
    return float((((windows - mean) / std) * ((patch - patch.mean()) / patch.std())).mean(axis=(2, 3)).max())


def test_real_rotated_video_is_upright(videos):
    # video_90 is the keyboard of video_0 filmed sideways, with a -90 display matrix: shown upright,
    # patches of video_0's keys are found in it; turned the other way, they are not.
    def grey_quarter(name):  # native size, then 4x4 block means
        frame = read_video(videos / name, size=None)[0][0].astype(float).mean(axis=2)
        return frame.reshape(frame.shape[0] // 4, 4, frame.shape[1] // 4, 4).mean(axis=(1, 3))

    upright, turned = grey_quarter("decord_video_0.mov"), grey_quarter("decord_video_90.mov")
    assert upright.shape == (80, 142) and turned.shape == (142, 80)
    for y, x in [(10, 80), (20, 50), (30, 90)]:
        patch = upright[y : y + 30, x : x + 30]
        assert _best_match(patch, turned) > 0.7 > _best_match(patch, np.rot90(turned, 2))


def test_real_upside_down_video_is_upright(videos):
    frames, info, _ = read_video(videos / "moviepy_fire2.mp4")
    assert info.rotation == -180 and frames.shape == (25, *SHAPE)
    grey = frames.astype(float).mean(axis=3)
    # Lit wall and ceiling above, dark floor below, in every frame of this room.
    assert (grey[:, :32].mean(axis=(1, 2)) > 1.3 * grey[:, -32:].mean(axis=(1, 2))).all()


def test_real_xvid_frames_stay_in_decoder_order(videos):
    frames, _, _ = read_video(videos / "mmaction2_test.avi")
    # Its pts run 1, 2, 4, 3, ...: sorting by them jumps back and forth (mean neighbour difference 3.6).
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() < 3.0
