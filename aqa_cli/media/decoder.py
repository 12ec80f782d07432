"""Decode any video or image PyAV opens into display-oriented RGB uint8 frames of one size.

This is the preprocess hot path, so it stays light: PyAV and numpy only (no torch), threaded decoding,
one reused FFmpeg scaler (swscale) per video doing resize + colour conversion in a single pass, and a
`wanted` filter so that frames nobody stores skip the scaler altogether.

What real files throw at it, and where it is handled:
* rotation stored as display-matrix side data -> `VideoDecoder._convert`;
* no frame count or duration in the container (WebM/MKV), variable frame rate -> decode to the end,
  never trust header counts; fps is `average_rate`, never `base_rate` (90000 for a VFR phone video);
* non-monotonic pts (Xvid B-frames in AVI) -> frames are numbered in decoder output order, never by pts;
* alpha (GIF decodes as bgra, yuva formats) -> converting to rgb24 drops the alpha channel;
* full-range YUV (yuvj420p MJPEG, or yuv420p tagged JPEG range) -> swscale reads the range from each
  frame, so no range is forced here (forcing one would break the other kind);
* corrupt packets -> `VideoDecoder._decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from aqa_cli.util.errors import AqaError, MissingDependency

try:
    import av
    from av.video.reformatter import Interpolation, VideoReformatter
except ImportError as exc:  # a torch-only machine still trains and evaluates stores; decoding needs PyAV
    raise MissingDependency(
        f"decoding videos needs PyAV, which does not import here ({exc}); install it with `pip install av`, "
        "or decode on a machine that has it"
    ) from exc

FRAME_SIZE = (171, 128)  # (width, height)

INTERPOLATION = Interpolation.AREA
"""swscale's area averaging. Sources are mostly 2-8x larger than 171x128, and when downscaling AREA is a
box filter over the source pixels each output pixel covers: every source pixel counts (thin, fast things
such as a diver's limbs do not flicker in and out as point sampling or FAST_BILINEAR would make them),
nothing is blurred beyond the output pixel, and it is the cheapest antialiased filter (BILINEAR's is twice
as wide and a little slower, BICUBIC's, ffmpeg's default, four times: about 40% slower on 720p VP8).
When upscaling swscale uses bilinear for it."""


@dataclass
class VideoInfo:
    path: str
    width: int  # display-oriented original size (after rotation)
    height: int
    fps: float | None  # stream average rate, else (after a full pass) from the pts span; None if unknown
    frame_count: int | None  # container header count if given (> 0); informational only
    rotation: int  # display-matrix rotation in degrees as PyAV reports it (counterclockwise), 0 if none
    codec: str
    pix_fmt: str


class VideoDecoder:
    """Decode one video front to back; `frames()` yields `(index, frame)` in display order.

    `size` is the output (width, height) after rotation, or None for the native display-oriented size.
    `threads` is the thread count for both decoder and scaler; 0 lets FFmpeg choose (one per core).
    The first frame is decoded on opening, since only decoded frames carry the rotation, and a file
    that yields no frame at all should fail here with a clear message.
    """

    def __init__(
        self,
        path: str | Path,
        size: tuple[int, int] | None = FRAME_SIZE,
        threads: int = 0,
        interpolation: Interpolation = INTERPOLATION,
    ):
        self.path = str(path)
        self.frames_lost = 0
        self.time: float | None = None  # presentation time (s) of the frame `frames()` yielded last
        self._threads = threads
        self._interpolation = interpolation
        self._scaler = VideoReformatter()  # frame.reformat() would set up a new swscale context per frame
        self._container = _open(self.path)
        try:
            if not self._container.streams.video:
                raise AqaError(
                    f"{self.path}: has no video stream (audio only?); pass a file that contains video"
                )
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            self._decoded = self._decode(stream)
            self._first = next(self._decoded, None)
            if self._first is None:
                raise AqaError(
                    f"{self.path}: no video frame could be decoded ({self.frames_lost} packets failed to decode); "
                    "the file is damaged, replace or re-encode it"
                )
        except BaseException:
            self._container.close()
            raise
        first = self._first
        rotation = round(first.rotation)
        self._quarter_turns = round(rotation / 90) % 4  # np.rot90 turns counterclockwise, like PyAV's angle
        sideways = self._quarter_turns % 2 == 1
        width, height = (first.height, first.width) if sideways else (first.width, first.height)
        # The scaler works on the coded frame, so a sideways video is scaled to the transposed size.
        self._scaled = (None, None) if size is None else (size[::-1] if sideways else size)
        self.info = VideoInfo(
            path=self.path,
            width=width,
            height=height,
            fps=float(stream.average_rate) if stream.average_rate else None,
            frame_count=stream.frames or None,
            rotation=rotation,
            codec=stream.codec_context.name,
            pix_fmt=first.format.name,
        )

    def frames(self, wanted: Callable[[int], bool] | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
        """Yield `(index, frame)` for every decoded frame; index counts from 0 in decoder output order.

        frame is (H, W, 3) uint8 RGB, C-contiguous, or None (no conversion done) where `wanted(index)` is
        False. A decoder makes one pass, so this can be iterated once.
        """
        first, self._first = self._first, None
        if first is None:
            raise RuntimeError(f"{self.path}: frames() can be iterated only once per VideoDecoder")
        for index, frame in enumerate(chain([first], self._decoded)):
            self.time = frame.time
            yield index, self._convert(frame) if wanted is None or wanted(index) else None
        if self.info.fps is None:
            self.info.fps = _pts_rate(first, frame, index)

    def _decode(self, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
        """Decode packet by packet, so that a corrupt packet costs its own frames and not the rest.

        demux() ends with an empty packet per stream, which flushes the frames the (threaded) decoder
        still holds. Failing to read the file itself (not one packet) is an AqaError.
        """
        try:
            for packet in self._container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    self.frames_lost += 1
                    continue
                yield from frames
        except av.FFmpegError as err:
            raise AqaError(
                f"{self.path}: reading failed ({err.strerror}); check the file and the disk"
            ) from err

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = self._scaled
        rgb = self._scaler.reformat(
            frame, width, height, "rgb24", interpolation=self._interpolation, threads=self._threads
        ).to_ndarray()
        # to_ndarray() is a view that skips row padding; rot90 is a view too. One copy makes it contiguous.
        return np.ascontiguousarray(np.rot90(rgb, self._quarter_turns))

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _pts_rate(first: av.VideoFrame, last: av.VideoFrame, intervals: int) -> float | None:
    """Frames per second from the pts span, for containers that store no average rate (e.g. NUT)."""
    if first.time is None or last.time is None or last.time <= first.time:
        return None
    return intervals / (last.time - first.time)


def _open(path: str) -> av.container.InputContainer:
    """av.open with the common failures turned into one-line errors that name the file."""
    file = Path(path)
    if not file.exists():
        raise AqaError(f"{path}: no such file; check the path")
    if file.is_dir():
        raise AqaError(f"{path}: is a directory, not a video file; pass a video file")
    if file.stat().st_size == 0:
        raise AqaError(f"{path}: file is empty (0 bytes); copy or download it again")
    try:
        return av.open(path, metadata_errors="replace")
    except av.FFmpegError as err:
        raise AqaError(
            f"{path}: cannot open it as a video ({err.strerror}); check that it is a readable video or image file"
        ) from err


def decode_image(path: str | Path, size: tuple[int, int] | None = FRAME_SIZE) -> np.ndarray:
    """One still image (jpg, png, bmp, ...) as (H, W, 3) uint8, through the same decoder and scaler."""
    with VideoDecoder(path, size) as decoder:
        return next(decoder.frames())[1]
