"""Voice features on real speech: espeak-ng sentences and the alsa-utils human recordings."""
import os

import numpy as np
import pytest

from liveavatar.clock import VirtualClock
from liveavatar.errors import ConfigError
from liveavatar.perception import Perception
from liveavatar.perception.voice import HOP, RATE, VoiceAnalyzer
from liveavatar.types import VISEMES, AudioChunk, CapturedFrame
from tests.media import path, read_wav, speak

PAD_S = 1.0   # speech_*.wav have 1 s of silence on each side


def analyse(samples, rate, keywords=(), chunk_s=0.02):
    va = VoiceAnalyzer(keywords=keywords)
    step = max(1, int(rate * chunk_s))
    for i in range(0, len(samples), step):
        va.feed(samples[i:i + step], rate, 1_000_000_000 + int(i / rate * 1e9))
    va.flush()
    return va


def regions(va, total_s):
    h = va.history()
    t = h["t"]
    speech = (t > PAD_S + 0.15) & (t < total_s - PAD_S - 0.15)
    silence = (t < PAD_S - 0.2) | (t > total_s - PAD_S + 0.3)
    return h, speech, silence


@pytest.fixture(scope="module")
def dance():
    return read_wav(path("speech_dance.wav"))


def test_espeak_speech_is_speaking_and_its_padding_is_not(dance):
    a, rate = dance
    va = analyse(a, rate)
    h, speech, silence = regions(va, len(a) / rate)
    assert h["speaking"][speech].mean() > 0.6
    assert h["speaking"][silence].max() < 0.2
    # Louder in speech than in the (digital) silence; the mouth opens only while speaking.
    assert np.median(h["loudness_dbfs"][speech]) > np.median(h["loudness_dbfs"][silence]) + 30
    assert (1 - h["visemes"][speech, 0]).max() > 0.5
    assert h["visemes"][silence, 0].min() > 0.9
    assert np.allclose(h["visemes"].sum(axis=1), 1, atol=1e-4)
    # Visemes are produced at 62.5 Hz (>= 50 Hz for lip sync).
    assert np.diff(h["t"]).max() == pytest.approx(HOP / RATE)


def test_espeak_pitch_and_its_deviation(dance):
    a, rate = dance
    va = analyse(a, rate)
    h, speech, _ = regions(va, len(a) / rate)
    f0 = h["pitch_hz"][speech]
    voiced = f0[f0 > 0]
    assert voiced.size > 20
    assert 80 < np.median(voiced) < 130, "espeak-ng's default en-us voice speaks at ~100 Hz"
    # The running baseline is the speaker's own: deviations stay within a few semitones.
    assert abs(np.median(h["pitch_dev"][h["pitch_hz"] > 0])) < 2.0
    assert (h["pitch_dev"][h["pitch_hz"] == 0] == 0).all()


def test_pitch_deviation_follows_a_raised_voice(dance):
    a, rate = dance
    va = VoiceAnalyzer()
    va.feed(a, rate, 1)                                # the speaker's usual voice: the baseline
    n_before = va.history()["t"].size
    up = 2 ** (4 / 12)                                 # the same speech 4 semitones higher
    va.feed(a, int(rate * up), 1)
    h = va.history()
    dev = h["pitch_dev"][n_before:][h["pitch_hz"][n_before:] > 0]
    assert dev.size > 10
    assert 2.5 < np.median(dev) < 5.0


@pytest.mark.parametrize("name", ["Front_Center.wav", "Front_Left.wav"])
def test_recorded_human_voice_counts_as_speech(name):
    a, rate = read_wav(path(name))
    h = analyse(a, rate).history()
    assert (h["speaking"] > 0.5).mean() > 0.4
    f0 = h["pitch_hz"][h["pitch_hz"] > 0]
    assert f0.size > 5 and 120 < np.median(f0) < 320


def test_recorded_noise_is_not_speech():
    a, rate = read_wav(path("Noise.wav"))
    h = analyse(a, rate).history()
    assert (h["speaking"] > 0.5).mean() < 0.05
    assert (h["pitch_hz"] == 0).mean() > 0.95


def test_command_word_is_spotted_and_another_is_not(dance):
    a, rate = dance
    va = analyse(a, rate, keywords=("dance", "jump"))
    hits = va.drain_hits()
    assert [h.word for h in hits] == ["dance"]
    # "dance" ends about 2.6 s into the file (1 s padding + "hello everyone, let's dance").
    t_s = (hits[0].t_ns - 1_000_000_000) / 1e9
    assert 2.2 < t_s < 3.3
    assert 0.0 < hits[0].confidence <= 1.0


def test_keywords_reach_cues_through_the_voice_thread(dance):
    a, rate = dance
    # The whole file arrives at once here (not in real time), so the queue must hold all of it.
    # A virtual clock: "audio received recently" must not depend on how busy the machine is.
    p = Perception(static=False, pose=False, hands=False, face=False, keywords=("dance", "wave"),
                   audio_queue=400, clock=VirtualClock(9_000_000_000))
    try:
        step = rate // 50
        for i in range(0, len(a), step):
            p.process_audio(AudioChunk(a[i:i + step], rate, i, 5_000_000_000 + int(i / rate * 1e9)))
        assert p.flush_audio(timeout=30)
        cues = p.process_video(CapturedFrame(np.zeros((48, 64, 3), np.uint8), 0, 9_000_000_000))
        again = p.process_video(CapturedFrame(np.zeros((48, 64, 3), np.uint8), 1, 9_033_000_000))
    finally:
        p.close()
    assert [k.word for k in cues.keywords] == ["dance"]
    assert again.keywords == (), "a hit is reported once"
    # The hit is stamped in the capture clock of the audio chunks (stream started at 5 s).
    assert 7.2e9 < cues.keywords[0].t_ns < 8.3e9
    assert cues.voice.present and cues.voice.speaking_prob < 0.2, "the file ends in silence"


def test_unknown_keyword_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="xqzzv"):
        VoiceAnalyzer(keywords=("dance", "xqzzv"))


@pytest.mark.parametrize("layout", ["8k", "44k1_stereo", "48k_planar_int16", "96k_6ch", "float64"])
def test_any_rate_and_channel_layout(dance, layout):
    import av
    a, rate = dance

    def resample(x, to):
        rs = av.AudioResampler(format="flt", layout="mono", rate=to)
        f = av.AudioFrame.from_ndarray(x[None, :].astype(np.float32), format="flt", layout="mono")
        f.sample_rate = rate
        return np.concatenate([o.to_ndarray()[0] for o in rs.resample(f) + rs.resample(None)])

    if layout == "8k":
        x, r = resample(a, 8000), 8000
    elif layout == "44k1_stereo":
        m = resample(a, 44100)
        x, r = np.stack([m, 0.5 * m], axis=1), 44100
    elif layout == "48k_planar_int16":
        m = (resample(a, 48000) * 32767).astype(np.int16)
        x, r = np.stack([m, m]), 48000                   # (channels, n)
    elif layout == "96k_6ch":
        m = resample(a, 96000)
        x, r = np.repeat(m[:, None], 6, axis=1) * 0.8, 96000
    else:
        x, r = a.astype(np.float64), rate
    va = analyse(x, r)
    h, speech, silence = regions(va, len(a) / rate)
    assert h["speaking"][speech].mean() > 0.6 and h["speaking"][silence].max() < 0.2
    assert va.bad_chunks == 0


def test_vowels_pick_their_visemes(tmp_path):
    shares = {}
    for name, text in (("A", "[[A:::::]]"), ("I", "eeeee"), ("U", "who knew"), ("E", "eh eh eh"),
                       ("O", "go slow")):
        a, rate = read_wav(speak(text, tmp_path / f"{name}.wav", pad_s=0.3))
        h = analyse(a, rate).history()
        vis = h["visemes"]
        open_ = vis[:, 1:].sum(axis=1) > 0.3
        assert open_.sum() > 10
        shares[name] = (vis[open_, 1:] / vis[open_, 1:].sum(axis=1, keepdims=True)).mean(axis=0)
    for name, share in shares.items():
        assert VISEMES[1 + int(np.argmax(share))] == name, (name, share.round(2))


def test_clipped_silent_and_broken_audio_never_raise(dance):
    a, rate = dance
    loud = np.clip(a * 20, -1, 1)                       # heavily clipped speech
    va = analyse(loud, rate)
    h, speech, _ = regions(va, len(a) / rate)
    assert h["speaking"][speech].mean() > 0.5
    assert np.median(h["loudness_dbfs"][speech]) > -10
    assert np.isfinite(h["pitch_dev"]).all()

    quiet = analyse(np.zeros(rate * 2, np.float32), rate)
    assert quiet.latest.speaking_prob < 0.1 and quiet.latest.loudness_dbfs == -120
    assert quiet.latest.visemes[0] > 0.99

    va = VoiceAnalyzer()
    broken = [(np.full(480, np.nan, np.float32), 48000), (np.zeros(0, np.float32), 48000),
              (a[:480], 0), (a[:480], -5), (np.full((4, 4, 4), 0.5), 16000), ("junk", 16000),
              (a[:480], "48000"), (np.array([np.inf, -np.inf] * 240, np.float32), 48000)]
    for samples, r in broken:
        va.feed(samples, r, 1)
    assert va.bad_chunks >= 3
    assert np.isfinite([va.latest.loudness_dbfs, va.latest.pitch_hz, va.latest.speaking_prob]).all()
    assert va.feed(a[:4410], rate, 1) > 0, "still working after the junk"


def test_process_audio_is_bounded_and_non_blocking(dance):
    a, rate = dance
    p = Perception(static=False, pose=False, hands=False, face=False, audio_queue=4)
    try:
        depth = 0
        for i in range(400):                           # flood: far more than the queue holds
            p.process_audio(AudioChunk(a[:960], rate, i, i))
            depth = max(depth, p._audio_q.qsize())
        p.process_audio(None)                          # not even a chunk: counted, not raised
        assert p.flush_audio(timeout=30)
        dropped = p.stats()["dropped"]["audio_chunks"]
        assert p.stats()["bad_audio_chunks"] == 1
    finally:
        p.close()
    assert dropped > 0, "the oldest chunks were dropped instead of queueing without bound"
    assert depth <= 4


def test_keyword_thresholds_per_phrase(dance):
    a, rate = dance
    # A strict threshold silences the word that the default finds; bad entries are clear errors.
    strict = analyse(a, rate, keywords=("dance/1e-2", "jump"))
    assert strict.drain_hits() == ()
    phrase = analyse(a, rate, keywords=("everyone",))
    assert [h.word for h in phrase.drain_hits()] == ["everyone"]
    with pytest.raises(ConfigError, match="threshold"):
        VoiceAnalyzer(keywords=("dance/loud",))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        VoiceAnalyzer(keywords=("dance/5",))


def test_keyword_spotting_runs_in_its_own_process_and_survives_it_dying(dance):
    """pocketsphinx holds the GIL for a whole utterance, so it runs in a child process; if
    that process dies, spotting stops and voice analysis goes on without raising."""
    from liveavatar.perception.voice import KeywordSpotter
    a, rate = dance
    spotter = KeywordSpotter(["dance"])
    try:
        assert spotter._child.proc.pid != os.getpid() and spotter._child.proc.is_alive()
        spotter._child.proc.kill()
        spotter._child.proc.join(5)
        assert spotter.spot(np.zeros(16000, np.int16)) == []
        assert spotter.failed
    finally:
        spotter.close()
