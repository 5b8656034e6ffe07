"""The API-writer interface: what the Pusher needs from any Gthulhu flavor.

A writer obtains and renews its credentials, writes the desired state (the
tracked processes) in its flavor's terms, clears what it wrote, and
describes itself for `status`.  The Pusher decides *when*; a writer decides
*what* and *how*.  Every call takes the exchange's monotonic deadline.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Dict,
    FrozenSet,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ..config.schema import AUTO, Config, StrategyConfig
from ..core.procfs import ProcFS
from ..core.readback import Comparison, ListedEntry
from ..core.strategy import policy_id
from ..core.tracker import ProcessView
from .answers import token_answer
from .auth import Token, TokenError, verify_token
from .errors import ApiError, check_answer
from .http import Answer, JsonHttp

if TYPE_CHECKING:
    from .detect import Probe

log = logging.getLogger(__name__)

TOKEN_PATH = "/api/v1/auth/token"
STRATEGIES_PATH = "/api/v1/scheduling/strategies"  # what the scheduler reads (v0, DM)


@dataclass(frozen=True)
class Holdings:
    """What the server holds of this host, read without changing anything."""

    saw: str  # in words, for doctor
    listed: Optional[List[ListedEntry]]  # what the scheduler will read; None: not said here
    rule: Optional[str] = None  # this host's rule (regex) as the server holds it, if any


class Login(abc.ABC):
    """A flavor's credentials (a token for our public key, a Manager login), renewed on
    our clock before they expire; `token` is None until obtained and once dropped."""

    def __init__(self, http: JsonHttp, clock: Callable[[], float],
                 wall_clock: Callable[[], float]) -> None:
        self.http = http
        self.token: Any = None
        self._clock = clock
        self._wall = wall_clock
        self._renew_at = 0.0
        self.expires_mono: Optional[float] = None  # shown as wall-clock by the publisher
        self.obtained = 0  # how many times they were obtained

    def valid(self) -> bool:
        return self.token is not None and self._clock() < self._renew_at

    @abc.abstractmethod
    def obtain(self, deadline: float) -> Any:
        """Get them from the server (a login, a token for our key) within `deadline`."""

    def drop(self) -> None:
        # The expiry goes with them: a Manager's, kept, said "token valid until" a time
        # past for as long as the server refused the login.
        self.token = self.expires_mono = None


class ApiWriter(abc.ABC):
    """One Gthulhu flavor: its facts, its rules for the configuration, how `auto`
    recognises it (`probe`), and — an instance — its writer.  The flavors are listed
    in `registry.FLAVORS` (whose docstring says what derives from it)."""

    name: ClassVar[str] = "?"  # its api.flavor value
    display: ClassVar[str] = "?"  # "a Gthulhu <display>"
    summary: ClassVar[str] = ""  # one line for the example configuration
    credential: ClassVar[str] = "public-key"  # or "password" (a login)
    sends_names: ClassVar[bool] = False  # True: a rule naming tasks; False: task IDs
    readback_path: ClassVar[str] = ""  # where `read_back` reads on api.url, if it does
    proof_file: ClassVar[str] = ""  # its state-directory file of what it wrote (ownership.py)
    login: Login

    def __init__(self, http: JsonHttp, strategy: StrategyConfig) -> None:
        self.http = http
        self.strategy = strategy  # the values to send; replaced on reload

    # --- the flavor's facts (class level) ---------------------------------------------------

    @classmethod
    def credentials(cls, config: Config) -> FrozenSet[str]:
        """What it logs in with for `config`: "public-key" (a token for our key), "password"."""
        return frozenset({cls.credential})

    @classmethod
    def priority_problem(cls, priority: Union[bool, int]) -> str:
        """Why this flavor cannot take `strategy.priority` ("" when it can)."""
        return ""

    @classmethod
    def config_problem(cls, config: Config) -> str:
        """What else of the configuration this flavor cannot honour ("" when none)."""
        return ""

    @classmethod
    def probe(cls, probe: Probe, deadline: float) -> bool:
        """Does the server `probe` asks look like this flavor?  (api.flavor = "auto")"""
        return False

    @classmethod
    def create(cls, http: JsonHttp, config: Config, state_dir: str,
               clock: Callable[[], float], wall_clock: Callable[[], float]) -> ApiWriter:
        """The writer for `config` (state files under `state_dir`); every flavor of the
        registry has one."""
        raise NotImplementedError(f"{cls.__name__} is not a flavor of the registry")

    @property
    def timeout(self) -> float:
        return self.http.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.http.timeout = seconds

    def authenticate(self, deadline: float) -> bool:
        """Obtain or renew credentials if due; True if new ones were obtained."""
        if self.login.valid():
            return False
        self.login.obtain(deadline)
        return True

    def drop_credentials(self) -> None:
        """Forget the credentials (the server refused them)."""
        self.login.drop()

    def names_tasks(self) -> bool:
        """Does what this writer sends name tasks (so thread names matter)?"""
        return self.sends_names

    def place(self, config: Config) -> Tuple[str, ...]:
        """Where what this writer wrote lives, in `config`'s terms: a reload that changes
        it moves this host away from it (the new writer never looks there again).
        Each part as "key value", for the log.  The flavor counts: a reload from "auto"
        (which found a Decision Maker) to an explicit "v0" at the same api.url left the
        rule behind, no longer maintained, after the gNB exited ("auto" finds this
        flavor again at the same api.url)."""
        flavor = self.name if config.api.flavor == AUTO else config.api.flavor
        return (f"api.url {config.api.url}", f"api.flavor {flavor}")

    def unsuited(self, config: Config) -> str:
        """What of `config` (a reload) the server written to cannot take ("" when
        nothing); an explicit flavor's is refused when the files are loaded.  With
        api.flavor = "auto" at this api.url the new writer finds this flavor again (merge
        mode passes the load: a v0 server takes it) and refuses every push, and what this
        host wrote stays on the server, no longer maintained: whether the flavor written
        with was found by "auto" or named (a reload from "decision-maker" to "auto")."""
        if config.api.flavor != AUTO or config.api.url != self.http.base_url:
            return ""
        problem = self.config_problem(config)
        return problem and (f"the server at {config.api.url} is a Gthulhu {self.display} "
                            f'(api.flavor = "auto"): {problem}')

    @abc.abstractmethod
    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        """Make the server hold exactly this host's desired state; the entries written."""

    @abc.abstractmethod
    def clear(self, deadline: float) -> None:
        """Remove what this host wrote (clear_on_stop)."""

    def left_behind(self) -> str:
        """What this host wrote and may still be on the server, and where, as far as it
        knows without asking (said when a clear fails: on stop, on a reload that moves)."""
        return f"this host's strategies at {self.http.base_url}{STRATEGIES_PATH}"

    def holdings(self, deadline: float, last_rule: Optional[str] = None) -> Holdings:
        """What the server holds of this host (read-only; `last_rule`: the regex the
        running service says it wrote last, when known)."""
        return Holdings("not known for this flavor", None)

    def read_back(self, views: Sequence[ProcessView], deadline: float,
                  rule: Optional[str] = None) -> Optional[Comparison]:
        """What the scheduler will boost (the strategies it reads), compared with `views`;
        None when this server cannot tell (`verify_problem` says why).  One GET.
        `rule` (rule flavors): the regex whose entries are this host's — by default the
        rule `views` make, i.e. what `write` sends; doctor, comparing every thread of
        the live gNB, passes the rule the server holds for this host ("" for none)."""
        return None

    def verify_problem(self) -> str:
        """Why `read_back` cannot tell, "" when it can."""
        return ""

    @property
    def readback_source(self) -> str:
        """Where `read_back` reads (a URL), for the reports."""
        return f"{self.http.base_url}{self.readback_path}" if self.readback_path else ""

    def describe(self) -> Dict[str, Any]:
        return {"flavor": self.name, "url": self.http.base_url}

    def close(self) -> None:
        self.http.close()


class RuleWriter(ApiWriter):
    """The flavors that take one rule naming this host's tasks (the server finds the
    PIDs itself): an integer priority > 0, no merge mode, a warning about name
    matching when allow-lists are set."""

    sends_names = True

    def __init__(self, http: JsonHttp, config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config.strategy)
        self.node = config.node_name
        self.procfs = ProcFS()  # who a listed task we do not track is (read-back)

    def place(self, config: Config) -> Tuple[str, ...]:
        return (*super().place(config), f"api.node_name {config.node_name}")

    @classmethod
    def priority_problem(cls, priority: Union[bool, int]) -> str:
        # The 2026 scheduler skips <= 0, and its kernel mode (the Helm default) rejects
        # > 20: a rule saying 50 was written, listed and called boosted, and boosted nothing.
        # Refused rather than warned about: 1..20 boosts in both modes (user space takes
        # any value > 0 as the same full boost), so no setting loses anything by it.
        if priority is True or (not isinstance(priority, bool) and 0 < priority <= 20):
            return ""
        if not isinstance(priority, bool) and priority > 20:
            return (f"strategy.priority: {priority} is above 20, which the scheduler's kernel "
                    "mode (Gthulhu's Helm default) rejects: use 1 to 20 (in its user-space "
                    "mode every value above 0 is the same full boost; true means 1)")
        return (f"strategy.priority: {str(priority).lower()} would not boost anything: a "
                f"Gthulhu {cls.display} takes an integer from 1 to 20 (true means 1); only "
                'api.flavor = "v0" (the 2025 API) takes false')

    @classmethod
    def config_problem(cls, config: Config) -> str:
        if config.strategy.mode == "merge":
            return (f'strategy.mode: "merge" is for the v0 API only; a Gthulhu {cls.display} '
                    "keeps each writer's rules apart by itself (use \"overwrite\")")
        return ""

    @classmethod
    def create(cls, http: JsonHttp, config: Config, state_dir: str,
               clock: Callable[[], float], wall_clock: Callable[[], float]) -> ApiWriter:
        # What a rule flavor means for this host, said once when it is chosen.
        log.info("strategy.targets is ignored with the %s flavor: the server picks the tasks "
                 "from this host's rule", cls.name)
        if config.match.uid or config.match.exe:
            log.warning("the %s matches tasks by name: a process of any user named like a "
                        "tracked thread (%s) is boosted too; match.uid and match.exe only "
                        "decide whether this host publishes the rule (the read-back names "
                        "every such task)", cls.display, "/".join(config.match.comm))
        return cls(http, config, state_dir, clock, wall_clock)


class PublicKeyToken(Login):
    """A token traded for `config`'s RSA public key (v0 and the Decision Maker), verified
    with that key and renewed before it expires, on our clock; `named`: asked for as
    this node (client_id: its policy id)."""

    def __init__(self, http: JsonHttp, config: Config, named: bool,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, clock, wall_clock)
        self._pem = config.public_key_pem
        self._path = config.api.public_key
        self._client_id = policy_id(config.node_name) if named else None
        self.token: Optional[Token] = None
        self._skew_reported = False
        self._took_over = False  # from another login (see carry_on_from)

    def obtain(self, deadline: float) -> Token:
        return self.accept(self.request(deadline))

    def carry_on_from(self, before: PublicKeyToken) -> None:
        """Take over from the login `before` (detection replaces it): a clock skew it has
        reported is not reported again, nor a token said at INFO, at every reconnect.
        (Its count of tokens obtained is the AutoWriter's to add up.)"""
        self._skew_reported = self._skew_reported or before._skew_reported
        self._took_over = True

    def request(self, deadline: float) -> Answer:
        """POST the public key (the answer is judged by `accept`)."""
        payload: Dict[str, Any] = {"public_key": self._pem}
        if self._client_id is not None:
            payload["client_id"] = self._client_id
        return self.http.request("POST", TOKEN_PATH, payload, deadline)

    def accept(self, answer: Answer) -> Token:
        """The verified token of a token answer, or the ApiError that says why not."""
        what = f"POST {self.http.base_url}{TOKEN_PATH}"
        if answer.status == 401:
            raise ApiError("unauthorized", f"the server refused our public key {self._path}: "
                           "it is not the pair of the server's JWT private key")
        if answer.status == 404:
            raise ApiError("wrong-flavor", f"{what} answered 404: the server gives no tokens "
                           "for a public key (a Gthulhu Manager? set api.flavor)")
        check_answer(answer, what)
        value, expired_at = token_answer(answer.body)
        try:
            token = verify_token(value, self._pem, self._wall(), expired_at)
        except TokenError as exc:
            raise ApiError("bad-answer", str(exc)) from None
        self.token = token
        self.obtained += 1
        now = self._clock()
        self._renew_at = now + token.refresh_in
        self.expires_mono = now + token.expires_at - self._wall()
        if token.skew and not self._skew_reported:
            self._skew_reported = True
            log.warning("the API host's clock is %+.0f s off ours (judged from the token's "
                        "issue time); tokens are still accepted, but check NTP on both hosts",
                        token.skew)
        # News once: later tokens are renewals, or retries of a failing push (each
        # gets a new token, after a 401 or a garbled answer, or from detecting
        # again after a timeout) that would log a line per retry for as long as the
        # failure lasts; the push's own state change is the line that says it.
        log.log(logging.INFO if self.obtained == 1 and not self._took_over else logging.DEBUG,
                "got an API token, valid until %s (renewing in %.0f s)",
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.expires_at)),
                token.refresh_in)
        return token

    def header(self) -> str:
        assert self.token is not None
        return self.token.value
