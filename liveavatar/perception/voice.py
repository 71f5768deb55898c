"""Voice features from microphone audio, on one worker thread.

Any rate and channel layout -> 16 kHz mono (PyAV's swresample) -> 16 ms hops (62.5 Hz):
- speaking probability: silero-vad's bundled ONNX model on onnxruntime (every 32 ms)
- loudness: RMS in dBFS
- pitch: YIN F0 (60-500 Hz), and its deviation in semitones from the user's running baseline
- visemes (closed, A, I, U, E, O): the first two formants from LPC, softly matched to vowel
  prototypes, gated by voice activity and loudness
- keywords: pocketsphinx keyword search on each spoken utterance (cut by the VAD)
Bad audio (NaN, clipping, odd dtypes or layouts, zero rate, silence) is cleaned or skipped; nothing
here raises out of `feed`.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import solve_toeplitz  # imported here: a first-use import would stall the voice thread

from liveavatar.types import VISEMES, KeywordHit, VoiceFeatures

log = logging.getLogger(__name__)

RATE = 16000
HOP = 256                  # 16 ms: visemes and loudness at 62.5 Hz
VAD_BLOCK = 512            # silero's block at 16 kHz (32 ms)
VAD_CONTEXT = 64
FRAME = 640                # 40 ms analysis window for pitch and formants
F0_MIN, F0_MAX = 60.0, 500.0
LPC_ORDER = 18          # 2 + fs/kHz: fewer poles miss a low F1 (e.g. /u/)

# (F1, F2) Hz of the open visemes; rough averages over adult voices.
_VOWEL_FORMANTS = np.array([[750, 1250], [300, 2250], [330, 1100], [500, 1850], [520, 900]], np.float64)
_VOWEL_LOG = np.log(_VOWEL_FORMANTS)


def silero_model_path() -> Path:
    import silero_vad
    return Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Float32 mono in -1..1 from (n,), (n, ch) or (ch, n) of any numeric dtype; NaN/inf -> 0."""
    a = np.asarray(samples)
    if a.size == 0:
        return np.zeros(0, np.float32)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    else:
        a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        # (ch, n) with few channels is a common planar layout: average over the short axis.
        a = a.mean(axis=0 if a.shape[0] < a.shape[1] and a.shape[0] <= 16 else 1)
    elif a.ndim != 1:
        a = a.reshape(-1)
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(a, -1.0, 1.0)


class _Resampler:
    """Streaming resampling to 16 kHz mono with libswresample (keeps filter state across chunks)."""

    def __init__(self) -> None:
        self._rate = 0
        self._rs: Any = None           # av.AudioResampler, made for the first rate seen

    def __call__(self, mono: np.ndarray, rate: int) -> np.ndarray:
        if rate == RATE:
            return mono
        import av
        if rate != self._rate:
            self._rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            self._rate = rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono)[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        outs = self._rs.resample(frame)
        if not outs:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in outs]).astype(np.float32, copy=False)


class SileroVAD:
    """silero-vad v5 ONNX, stateful, one 512-sample block at a time (no torch needed)."""

    def __init__(self, model_path: Path | None = None) -> None:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(str(model_path or silero_model_path()), sess_options=opts,
                                          providers=["CPUExecutionProvider"])
        self._state = np.zeros((2, 1, 128), np.float32)
        self._input = np.zeros((1, VAD_CONTEXT + VAD_BLOCK), np.float32)
        self._sr = np.array(RATE, np.int64)
        self.providers = self._sess.get_providers()   # what really runs (CPU is plenty: ~1 ms)

    def reset(self) -> None:
        self._state[...] = 0
        self._input[...] = 0

    def __call__(self, block: np.ndarray) -> float:
        self._input[0, VAD_CONTEXT:] = block
        prob, state = self._sess.run(None, {"input": self._input, "state": self._state, "sr": self._sr})
        self._state = state
        self._input[0, :VAD_CONTEXT] = block[-VAD_CONTEXT:]
        return float(prob[0, 0])


def yin_pitch(frame: np.ndarray, rate: int = RATE, threshold: float = 0.15) -> tuple[float, float]:
    """(F0 Hz or 0, aperiodicity 0..1) by YIN's cumulative mean normalised difference, with the
    difference function from FFT autocorrelation."""
    w = len(frame) // 2
    tau_max = min(int(rate / F0_MIN), w)
    tau_min = int(rate / F0_MAX)
    x = frame.astype(np.float64)
    nfft = 1 << int(np.ceil(np.log2(len(x) + w)))
    spec = np.fft.rfft(x, nfft)
    # r[tau] = sum_{j<w} x[j] x[j+tau]: correlate the first w samples with the whole frame.
    r = np.fft.irfft(np.conj(np.fft.rfft(x[:w], nfft)) * spec, nfft)[:tau_max + 1]
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    e0 = energy[w]
    e_tau = energy[np.arange(tau_max + 1) + w] - energy[np.arange(tau_max + 1)]
    d = e0 + e_tau - 2 * r
    d[0] = 0
    cum = np.cumsum(d[1:]) / np.arange(1, tau_max + 1)
    cmnd = np.ones(tau_max + 1)
    cmnd[1:] = d[1:] / np.maximum(cum, 1e-12)
    seg = cmnd[tau_min:tau_max]
    below = np.flatnonzero(seg < threshold)
    if below.size == 0:
        return 0.0, float(seg.min()) if seg.size else 1.0
    i = below[0]
    if i == 0:
        return 0.0, float(seg[0])         # a dip at the range edge is a formant, not a pitch
    while i + 1 < seg.size and seg[i + 1] < seg[i]:   # walk down to the local minimum (a few steps)
        i += 1
    tau = i + tau_min
    # Parabolic interpolation around the minimum.
    if 1 <= tau < tau_max:
        a, b, c = cmnd[tau - 1], cmnd[tau], cmnd[tau + 1]
        den = a - 2 * b + c
        tau = tau + (0.5 * (a - c) / den if abs(den) > 1e-12 else 0.0)
    return float(rate / tau), float(cmnd[int(round(tau))])


def formants(frame: np.ndarray, rate: int = RATE, order: int = LPC_ORDER) -> tuple[float, float]:
    """(F1, F2) Hz from LPC roots of a pre-emphasised, windowed frame; (0, 0) if not found."""
    x = np.append(frame[0], frame[1:] - 0.97 * frame[:-1]) * np.hamming(len(frame))
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    r = np.fft.irfft(spec * np.conj(spec))[:order + 1]
    if r[0] <= 1e-10:
        return 0.0, 0.0
    r[0] *= 1.0 + 1e-6
    try:
        a = solve_toeplitz(r[:order], r[1:order + 1])
    except (np.linalg.LinAlgError, ValueError):
        return 0.0, 0.0
    roots = np.roots(np.concatenate([[1.0], -a]))
    roots = roots[roots.imag > 0]
    freqs = np.angle(roots) * rate / (2 * np.pi)
    bw = -np.log(np.abs(roots) + 1e-12) * rate / np.pi
    f = np.sort(freqs[(freqs > 200) & (freqs < 3500) & (bw < 500)])
    if f.size < 2:
        return 0.0, 0.0
    return float(f[0]), float(f[1])


class _KeywordDecoder:
    """pocketsphinx keyword search (bundled US-English model) over whole utterances, in this
    process. Searching an utterance at once is far more reliable than streaming tiny blocks
    (checked on espeak-ng and recorded speech: streamed 50 ms blocks missed every word)."""

    def __init__(self, words: Sequence[str], threshold: float = 1e-20) -> None:
        """`words`: phrases to spot, each optionally with its own detection threshold as
        "phrase/1e-30" (lower finds more, with more false alarms; longer phrases need lower)."""
        import tempfile

        from pocketsphinx import Decoder

        from liveavatar.errors import ConfigError
        thresholds: dict[str, float] = {}
        for entry in words:
            phrase, _, th = str(entry).partition("/")
            phrase = " ".join(phrase.lower().split())
            if not phrase:
                continue
            try:
                value = float(th) if th.strip() else float(threshold)
            except ValueError:
                raise ConfigError(f"keywords: {entry!r}: threshold {th!r} is not a number") from None
            if not 0 < value < 1:
                raise ConfigError(f"keywords: {entry!r}: threshold must be between 0 and 1 (e.g. 1e-20)")
            thresholds[phrase] = value
        self.words = tuple(thresholds)
        if not self.words:
            raise ConfigError("keywords: the list is empty")
        self._decoder = Decoder(lm=None, logfn="/dev/null")
        for phrase in self.words:
            for w in phrase.split():
                if self._decoder.lookup_word(w) is None:
                    raise ConfigError(f"keywords: {w!r} is not in the pocketsphinx English dictionary")
        with tempfile.NamedTemporaryFile("w", suffix=".kws", delete=False) as f:
            f.write("".join(f"{w} /{th:g}/\n" for w, th in thresholds.items()))
            kws_path = f.name
        try:
            self._decoder.add_kws("keywords", kws_path)
        finally:
            Path(kws_path).unlink(missing_ok=True)
        self._decoder.activate_search("keywords")

    def spot(self, pcm16: np.ndarray) -> list[tuple[str, float, float]]:
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm16.astype(np.int16).tobytes(), False, True)
        d.end_utt()
        hits = []
        for seg in d.seg() or ():
            word = seg.word.strip()
            if word in self.words:
                hits.append((word, (seg.end_frame + 1) / 100.0, float(np.clip(seg.prob, 0, 1))))
        return hits


def _spotter_process(conn: Any, words: list[str], threshold: float) -> None:
    """Child process: build the decoder, then answer one utterance (int16 bytes) at a time until
    None or a closed pipe."""
    from liveavatar.errors import UserError
    try:
        decoder = _KeywordDecoder(words, threshold)
    except UserError as e:
        conn.send(("error", str(e)))
        return
    conn.send(("ready", decoder.words))
    while True:
        try:
            data = conn.recv()
        except (EOFError, OSError):
            return
        if data is None:
            return
        conn.send(decoder.spot(np.frombuffer(data, np.int16)))


class KeywordSpotter:
    """Spots command words in whole utterances, in a child process.

    Why a process: pocketsphinx holds the GIL while it decodes, and an utterance takes about
    150 ms. In the live service that stalled the event loop, so voice left for viewers in bursts
    and their browsers grew the audio buffer (and, to keep lips in sync, the video's) by ~150 ms.
    The caller still waits for the answer, but with the GIL released."""

    def __init__(self, words: Sequence[str], threshold: float = 1e-20) -> None:
        """`words`: phrases to spot, each optionally with its own detection threshold as
        "phrase/1e-30" (lower finds more, with more false alarms; longer phrases need lower).
        Raises ConfigError for an empty list, a bad threshold or a word not in the dictionary."""
        import weakref

        from liveavatar.errors import ConfigError
        from liveavatar.runtime.child import Child
        self._child = Child(_spotter_process, ([str(w) for w in words], threshold), "keyword-spotter",
                            goodbye=None, error=ConfigError)
        self._finalizer = weakref.finalize(self, self._child.stop)
        self.words: tuple[str, ...] = tuple(self._child.ready_value or ())
        self.failed = False

    def spot(self, pcm16: np.ndarray) -> list[tuple[str, float, float]]:
        """(word, end time in s from the start of `pcm16`, confidence) for each hit. If the
        child process is gone, spotting stops (logged once) and voice analysis goes on."""
        if self.failed or not len(pcm16):
            return []
        try:
            self._child.conn.send(np.ascontiguousarray(pcm16, np.int16).tobytes())
            return [tuple(h) for h in self._child.conn.recv()]
        except (EOFError, OSError):
            self.failed = True
            log.error("keyword spotting stopped: its pocketsphinx process exited (code %s)",
                      self._child.exitcode)
            return []

    def close(self) -> None:
        self._finalizer()


class VoiceAnalyzer:
    """Synchronous voice analysis: feed chunks, read `latest` and `drain_hits()`. The Perception
    stage runs one of these on its own thread; tests and offline tools may call it directly.
    Per-hop results also go into a bounded history (`history()`), for inspection."""

    def __init__(self, keywords: Sequence[str] = (), keyword_threshold: float = 1e-20,
                 history_hops: int = 4096, vad_model: Path | None = None) -> None:
        self.vad = SileroVAD(vad_model)
        self.spotter = KeywordSpotter(keywords, keyword_threshold) if keywords else None
        self._resampler = _Resampler()
        self._buf = np.zeros(RATE * 4, np.float32)       # pending 16 kHz samples
        self._n = 0
        self._frame = np.zeros(FRAME, np.float32)          # the last 40 ms, for pitch/formants
        self._vad_block = np.zeros(VAD_BLOCK, np.float32)
        self._vad_fill = 0
        self._samples_out = 0                              # 16 kHz samples analysed so far
        self._t0_ns = 0                                    # time of sample index _n0
        self._n0 = 0
        self.latest = VoiceFeatures()
        self._speaking = 0.0
        self._vowel = np.full(5, 0.2, np.float64)
        self._visemes = np.array([1, 0, 0, 0, 0, 0], np.float32)
        self._noise_db = -60.0
        self._baseline = 0.0                               # log2 Hz of the running pitch baseline
        self._n_voiced = 0
        # Utterance capture for keywords (bounded: 6 s), with 0.3 s of pre-roll.
        self._utt = np.zeros(RATE * 6, np.int16)
        self._utt_n = 0
        self._utt_start = 0
        self._in_utt = False
        self._quiet_hops = 0
        self._preroll: deque[np.ndarray] = deque(maxlen=int(0.3 * RATE / HOP))
        self._hits: deque[KeywordHit] = deque(maxlen=32)
        self._last_hit: dict[str, int] = {}
        # History ring (hops).
        self._h_n = history_hops
        self._h_i = 0
        self._h_count = 0
        self._h = np.zeros((history_hops, 5 + len(VISEMES)), np.float64)
        self.bad_chunks = 0
        self.process_s = 0.0
        self.audio_s = 0.0
        self._lock = threading.Lock()
        self._warm_up()

    def _warm_up(self) -> None:
        """Run each analysis once so the first real chunk does not pay for lazy initialisation."""
        noise = np.random.default_rng(0).normal(0, 0.05, FRAME).astype(np.float32)
        self.vad(noise[:VAD_BLOCK])
        self.vad.reset()
        yin_pitch(noise)
        formants(noise)
        if self.spotter is not None:
            self.spotter.spot((noise * 32767).astype(np.int16))

    # -- input ---------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray, sample_rate: int, t_capture_ns: int = 0) -> int:
        """Analyse one chunk; returns the number of 16 ms hops completed. Never raises."""
        import time
        t0 = time.thread_time()   # this thread only: vision threads run beside it
        try:
            return self._feed(samples, sample_rate, t_capture_ns)
        except Exception:
            self.bad_chunks += 1
            log.debug("voice chunk skipped", exc_info=True)
            return 0
        finally:
            self.process_s += time.thread_time() - t0

    def _feed(self, samples: np.ndarray, sample_rate: int, t_capture_ns: int) -> int:
        rate = int(sample_rate) if np.isscalar(sample_rate) else 0
        mono = to_mono_float(samples)
        if mono.size == 0:
            return 0
        if rate < 1000 or rate > 768000:
            self.bad_chunks += 1
            return 0
        self.audio_s += mono.size / rate
        x = self._resampler(mono, rate)
        if t_capture_ns:
            # Map analysed sample indices to monotonic time (the chunk's first sample was captured
            # at t_capture_ns; resampler delay is a few ms and ignored).
            self._t0_ns, self._n0 = t_capture_ns, self._samples_out + self._n
        hops = 0
        i = 0
        while i < x.size:
            take = min(x.size - i, self._buf.size - self._n)
            self._buf[self._n:self._n + take] = x[i:i + take]
            self._n += take
            i += take
            # Hop over the pending samples (a handful per chunk; the work inside is vectorised).
            pos = 0
            while self._n - pos >= HOP:
                self._hop(self._buf[pos:pos + HOP])
                pos += HOP
                hops += 1
            if pos:
                self._buf[:self._n - pos] = self._buf[pos:self._n]
                self._n -= pos
        return hops

    def time_of_sample(self, index: int) -> int:
        return int(self._t0_ns + (index - self._n0) * 1e9 / RATE)

    # -- per hop -------------------------------------------------------------------------------
    def _hop(self, hop: np.ndarray) -> None:
        self._frame[:-HOP] = self._frame[HOP:]
        self._frame[-HOP:] = hop
        self._samples_out += HOP
        self._vad_block[self._vad_fill:self._vad_fill + HOP] = hop
        self._vad_fill += HOP
        if self._vad_fill == VAD_BLOCK:
            self._speaking = self.vad(self._vad_block)
            self._vad_fill = 0

        rms = float(np.sqrt(np.mean(self._frame[-VAD_BLOCK:] ** 2)))
        db = 20 * np.log10(rms) if rms > 1e-6 else -120.0
        # Noise floor: follows quiet levels quickly, loud ones very slowly.
        self._noise_db += (db - self._noise_db) * (0.05 if db < self._noise_db else 0.0005)

        f0 = 0.0
        if self._speaking > 0.3 and db > -55:
            f0, aperiodicity = yin_pitch(self._frame)
            if aperiodicity > 0.35:
                f0 = 0.0
        dev = 0.0
        if f0 > 0:
            lf = np.log2(f0)
            self._n_voiced += 1
            # Running baseline: a plain mean for the first second of voice, then a slow EMA (~20 s).
            k = 1.0 / self._n_voiced if self._n_voiced < 62 else 1.0 / (20 * 62.5)
            self._baseline += (lf - self._baseline) * k
            dev = 12.0 * (lf - self._baseline)

        # Visemes: how open (voice activity x level above the noise floor) and which vowel.
        openness = self._speaking * float(np.clip((db - max(self._noise_db, -70.0) - 6.0) / 24.0, 0.0, 1.0))
        if openness > 0.05 and f0 > 0:
            f1, f2 = formants(self._frame)
            if f1 > 0:
                d = ((np.log([f1, f2]) - _VOWEL_LOG) ** 2).sum(axis=1)
                w = np.exp(-d / (2 * 0.12 ** 2))
                if w.sum() > 1e-6:
                    self._vowel += (w / w.sum() - self._vowel) * 0.5
        target = np.empty(len(VISEMES), np.float32)
        target[0] = 1.0 - openness
        target[1:] = openness * self._vowel
        # ~30 ms smoothing keeps the mouth from flickering at 62.5 Hz.
        self._visemes += (target - self._visemes) * 0.45
        self._visemes /= self._visemes.sum()

        with self._lock:
            self.latest = VoiceFeatures(speaking_prob=self._speaking, loudness_dbfs=float(db),
                                        pitch_hz=f0, pitch_dev=float(dev), visemes=self._visemes.copy(),
                                        present=True)
        h = self._h[self._h_i]
        h[0] = self._samples_out / RATE
        h[1:5] = (self._speaking, db, f0, dev)
        h[5:] = self._visemes
        self._h_i = (self._h_i + 1) % self._h_n
        self._h_count = min(self._h_count + 1, self._h_n)

        if self.spotter is not None:
            self._utterance(hop)

    def _utterance(self, hop: np.ndarray) -> None:
        pcm = (hop * 32767).astype(np.int16)
        if not self._in_utt:
            self._preroll.append(pcm)
            if self._speaking > 0.5:
                self._in_utt = True
                self._quiet_hops = 0
                pre = np.concatenate(self._preroll)
                self._utt[:pre.size] = pre
                self._utt_n = pre.size
                self._utt_start = self._samples_out - pre.size
                self._preroll.clear()
            return
        self._utt[self._utt_n:self._utt_n + HOP] = pcm
        self._utt_n += HOP
        self._quiet_hops = self._quiet_hops + 1 if self._speaking < 0.35 else 0
        ended = self._quiet_hops * HOP >= 0.3 * RATE
        if ended or self._utt_n + HOP > self._utt.size:
            self._decode_utterance()
            if not ended:
                # Too long: keep the last second so a word on the cut is still whole next time.
                keep = RATE
                self._utt[:keep] = self._utt[self._utt_n - keep:self._utt_n]
                self._utt_start += self._utt_n - keep
                self._utt_n = keep
            else:
                self._in_utt = False

    def _decode_utterance(self) -> None:
        if self.spotter is None:
            return
        for word, end_s, conf in self.spotter.spot(self._utt[:self._utt_n]):
            t_ns = self.time_of_sample(self._utt_start + int(end_s * RATE))
            last = self._last_hit.get(word)
            if last is not None and abs(t_ns - last) < 1e9:
                continue                      # the same word seen again in the kept overlap
            self._last_hit[word] = t_ns
            with self._lock:
                self._hits.append(KeywordHit(word, t_ns, conf))

    def close(self) -> None:
        """Stop the keyword spotter's process (analysis without keywords goes on working)."""
        if self.spotter is not None:
            self.spotter.close()

    def flush(self) -> None:
        """End of stream: decode any utterance in progress."""
        if self.spotter is not None and self._in_utt and self._utt_n:
            self._decode_utterance()
            self._in_utt = False

    # -- output --------------------------------------------------------------------------------
    def drain_hits(self) -> tuple[KeywordHit, ...]:
        with self._lock:
            hits = tuple(self._hits)
            self._hits.clear()
        return hits

    def history(self) -> dict[str, np.ndarray]:
        """The recorded hops, oldest first: t (s of audio), speaking, loudness_dbfs, pitch_hz,
        pitch_dev, visemes (k, 6)."""
        n = self._h_count
        idx = (np.arange(n) + (self._h_i - n)) % self._h_n
        h = self._h[idx]
        return {"t": h[:, 0], "speaking": h[:, 1], "loudness_dbfs": h[:, 2], "pitch_hz": h[:, 3],
                "pitch_dev": h[:, 4], "visemes": h[:, 5:]}

    def cpu_fraction(self) -> float:
        """Process time spent per second of audio (1.0 = one full core)."""
        return self.process_s / self.audio_s if self.audio_s > 0 else 0.0
