"""LiveAvatar hotkeys for OBS Studio (Tools > Scripts > +, pick this file).

Registers one OBS hotkey per emotion and per action (File > Settings > Hotkeys, names like
"LiveAvatar: emotion happy"; obs-websocket's TriggerHotkeyByName uses liveavatar.emotion.happy),
remembers their key bindings, and on a press sends the control event to the LiveAvatar service.
Imported and recorded actions (`liveavatar action import`, the studio's "Record action") are
fetched from the service (GET /api/actions) when the script loads and on "Refresh actions", and
get hotkeys too; the names are remembered, so their bindings load even while the service is down.
Optionally, switching to a named scene sets an emotion.

Standard library only: OBS runs scripts in its own embedded Python, which cannot see packages
installed elsewhere. Requests go out on a background thread with a short timeout, so a slow or
stopped service never freezes OBS's interface; failures are written to the script log.
"""
import json
import queue
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque

try:
    import obspython as obs
except ImportError:  # imported outside OBS (tests, linters): only the pure helpers are usable
    obs = None

# Kept in step with liveavatar/types.py (EMOTIONS, and ACTIONS without "none"); a test checks it.
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised", "excited", "shy")
ACTIONS = ("dance", "bow", "jump", "wave", "clap", "cheer", "spin", "nod", "head_shake", "point")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_SESSION = "default"
TIMEOUT_S = 2.0
QUEUE_SIZE = 16           # presses waiting to be sent; beyond that a press is dropped and logged
LOG_FLUSH_MS = 250        # log lines from the sender thread are written from OBS's own thread


ACTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def hotkey_names(extra_actions=()):
    return (["liveavatar.emotion." + e for e in EMOTIONS]
            + ["liveavatar.action." + a for a in ACTIONS]
            + ["liveavatar.action." + a for a in extra_actions if a not in ACTIONS])


def imported_from_listing(listing):
    """GET /api/actions -> the action names beyond the built-ins (well-formed ones only)."""
    names = listing.get("all", []) if isinstance(listing, dict) else []
    return [n for n in names if isinstance(n, str) and ACTION_NAME.match(n) and n not in ACTIONS]


def fetch_actions(url, token, session):
    """The service's imported actions for `session` (blocking; call off OBS's thread)."""
    query = urllib.parse.urlencode({"session": session})
    req = urllib.request.Request(url.rstrip("/") + "/api/actions?" + query)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        return imported_from_listing(json.loads(resp.read().decode("utf-8")))


def split_names(text):
    return [n for n in (text or "").split(",") if ACTION_NAME.match(n)]


def hotkey_description(name):
    _, kind, what = name.split(".", 2)
    return "LiveAvatar: %s %s" % (kind, what.replace("_", " "))


def parse_scene_map(text):
    """'Scene name = emotion' per line -> {scene: emotion}; returns (mapping, problems)."""
    mapping, problems = {}, []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        scene, sep, emotion = line.rpartition("=")
        scene, emotion = scene.strip(), emotion.strip().lower()
        if not sep or not scene:
            problems.append("scene map line %d: expected 'Scene name = emotion'" % number)
        elif emotion not in EMOTIONS:
            problems.append("scene map line %d: unknown emotion %r; known: %s"
                            % (number, emotion, ", ".join(EMOTIONS)))
        else:
            mapping[scene] = emotion
    return mapping, problems


class Config(object):
    def __init__(self, url=DEFAULT_URL, token="", session=DEFAULT_SESSION, scene_map=None,
                 scene_hold_s=5.0):
        self.url = url.rstrip("/")
        self.token = token
        self.session = session or DEFAULT_SESSION
        self.scene_map = scene_map or {}
        self.scene_hold_s = scene_hold_s


class Sender(object):
    """One daemon thread posting JSON to the service; `submit` never blocks the caller."""

    def __init__(self, log):
        self._queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._log = log
        self._thread = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def start(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="liveavatar-obs", daemon=True)
            self._thread.start()

    def stop(self):
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(TIMEOUT_S + 1)
            self._thread = None

    def submit(self, config, path, payload):
        try:
            self._queue.put_nowait((config.url + path, config.token, payload))
        except queue.Full:
            self.dropped += 1
            self._log("LiveAvatar: too many presses waiting, dropped %s" % payload.get("name"))

    def _run(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            url, token, payload = job
            try:
                post_json(url, token, payload)
                self.sent += 1
            except urllib.error.HTTPError as e:
                self.failed += 1
                self._log("LiveAvatar: %s refused %s (%d): %s"
                          % (url, payload.get("name"), e.code, _error_text(e)))
            except Exception as e:  # URLError, timeout, refused connection: report, keep going
                self.failed += 1
                self._log("LiveAvatar: could not reach %s (%s)" % (url, getattr(e, "reason", e)))


def post_json(url, token, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        return resp.read()


def _error_text(e):
    try:
        body = e.read().decode("utf-8", "replace")
        return json.loads(body).get("error", body)
    except Exception:
        return e.reason


def hotkey_payload(config, name):
    return "/api/hotkey", {"name": name, "session": config.session}


def scene_payload(config, emotion):
    path = "/api/sessions/%s/emotion" % urllib.parse.quote(config.session, safe="")
    return path, {"name": emotion, "mode": "hold", "hold_s": config.scene_hold_s, "source": "obs"}


# ------------------------------------------------------------------------------------------
# OBS glue. Everything below runs on OBS's thread.
# ------------------------------------------------------------------------------------------

_config = Config()
_pending_logs = deque(maxlen=100)
_sender = Sender(_pending_logs.append)
_hotkey_ids = {}
_fetched = queue.Queue(maxsize=4)     # imported action names from the background fetch
_settings = None


def _log(level_name, msg):
    if obs is not None:
        obs.script_log(getattr(obs, level_name), msg)


def _flush_logs():
    while _pending_logs:
        _log("LOG_WARNING", _pending_logs.popleft())
    while not _fetched.empty():
        _register(hotkey_names(_fetched.get_nowait()))


def _register(names):
    """Register hotkeys not registered yet (OBS's thread), loading their saved bindings."""
    added = 0
    for name in names:
        if name in _hotkey_ids:
            continue
        hotkey_id = obs.obs_hotkey_register_frontend(name, hotkey_description(name), _on_hotkey(name))
        _hotkey_ids[name] = hotkey_id
        if _settings is not None:
            saved = obs.obs_data_get_array(_settings, name)
            obs.obs_hotkey_load(hotkey_id, saved)
            obs.obs_data_array_release(saved)
        added += 1
    return added


def _fetch_in_background():
    config = _config

    def run():
        try:
            names = fetch_actions(config.url, config.token, config.session)
        except Exception as e:  # service down or old: the remembered names stay registered
            _pending_logs.append("LiveAvatar: could not list imported actions at %s (%s)"
                                 % (config.url, getattr(e, "reason", e)))
            return
        try:
            _fetched.put_nowait(names)
        except queue.Full:
            pass
    threading.Thread(target=run, name="liveavatar-obs-actions", daemon=True).start()


def _on_refresh(props, prop):
    _fetch_in_background()
    return False


def _on_hotkey(name):
    def callback(pressed):
        if pressed:  # OBS calls again on release; one event per press
            _sender.submit(_config, *hotkey_payload(_config, name))
    return callback


def _on_frontend_event(event):
    if event != obs.OBS_FRONTEND_EVENT_SCENE_CHANGED or not _config.scene_map:
        return
    scene = obs.obs_frontend_get_current_scene()
    if scene is None:
        return
    name = obs.obs_source_get_name(scene)
    obs.obs_source_release(scene)
    emotion = _config.scene_map.get(name)
    if emotion:
        _sender.submit(_config, *scene_payload(_config, emotion))


def script_description():
    return ("<b>LiveAvatar</b>: hotkeys for the avatar's emotions and actions. Bind them in "
            "Settings &gt; Hotkeys (\"LiveAvatar: ...\"). The service must be running "
            "(<code>liveavatar serve</code>).")


def script_properties():
    props = obs.obs_properties_create()
    obs.obs_properties_add_text(props, "url", "Service URL", obs.OBS_TEXT_DEFAULT)
    obs.obs_properties_add_text(props, "token", "Token (if the service needs one)", obs.OBS_TEXT_PASSWORD)
    obs.obs_properties_add_text(props, "session", "Session", obs.OBS_TEXT_DEFAULT)
    obs.obs_properties_add_text(props, "scene_map", "Scene = emotion (one per line, optional)",
                                obs.OBS_TEXT_MULTILINE)
    obs.obs_properties_add_float(props, "scene_hold_s", "Scene emotion lasts (s)", 0.5, 3600.0, 0.5)
    obs.obs_properties_add_button(props, "refresh_actions", "Refresh actions (imported, recorded)", _on_refresh)
    return props


def script_defaults(settings):
    obs.obs_data_set_default_string(settings, "url", DEFAULT_URL)
    obs.obs_data_set_default_string(settings, "session", DEFAULT_SESSION)
    obs.obs_data_set_default_double(settings, "scene_hold_s", 5.0)


def script_update(settings):
    global _config
    mapping, problems = parse_scene_map(obs.obs_data_get_string(settings, "scene_map") or "")
    for problem in problems:
        _log("LOG_WARNING", "LiveAvatar: " + problem)
    url = (obs.obs_data_get_string(settings, "url") or DEFAULT_URL).strip()
    if not url.startswith(("http://", "https://")):
        _log("LOG_WARNING", "LiveAvatar: service URL %r must start with http:// or https://" % url)
    _config = Config(url=url, token=(obs.obs_data_get_string(settings, "token") or "").strip(),
                     session=(obs.obs_data_get_string(settings, "session") or "").strip(),
                     scene_map=mapping, scene_hold_s=obs.obs_data_get_double(settings, "scene_hold_s"))


def script_load(settings):
    global _settings
    _settings = settings
    script_update(settings)
    _register(hotkey_names(split_names(obs.obs_data_get_string(settings, "imported_actions"))))
    obs.obs_frontend_add_event_callback(_on_frontend_event)
    obs.timer_add(_flush_logs, LOG_FLUSH_MS)
    _sender.start()
    _fetch_in_background()
    _log("LOG_INFO", "LiveAvatar: %d hotkeys registered, service %s, session %s"
         % (len(_hotkey_ids), _config.url, _config.session))


def script_save(settings):
    imported = [n.split(".", 2)[2] for n in _hotkey_ids
                if n.startswith("liveavatar.action.") and n.split(".", 2)[2] not in ACTIONS]
    obs.obs_data_set_string(settings, "imported_actions", ",".join(imported))
    for name, hotkey_id in _hotkey_ids.items():
        bindings = obs.obs_hotkey_save(hotkey_id)
        obs.obs_data_set_array(settings, name, bindings)
        obs.obs_data_array_release(bindings)


def script_unload():
    global _settings
    obs.timer_remove(_flush_logs)
    obs.obs_frontend_remove_event_callback(_on_frontend_event)
    for hotkey_id in _hotkey_ids.values():
        obs.obs_hotkey_unregister(hotkey_id)
    _hotkey_ids.clear()
    _sender.stop()
    _settings = None
