import re
from pathlib import Path

import ws_edge
from ws_edge.core.codes import TERMINAL_CLOSE_CODES, CloseCode

CLIENT_LIBRARY = Path(ws_edge.__file__).parent / "static" / "push-client.js"


def js_constant(name: str) -> str:
    match = re.search(rf"export const {name} = (.+?);", CLIENT_LIBRARY.read_text())
    assert match, f"{name} not found in push-client.js"
    return match.group(1)


def test_the_browser_clients_terminal_close_codes_are_the_edges():
    """The browser stops reconnecting on exactly the codes the edge documents as terminal."""
    codes = {int(code) for code in re.findall(r"\d+", js_constant("TERMINAL_CLOSE_CODES"))}
    assert codes == {int(code) for code in TERMINAL_CLOSE_CODES}
    assert int(js_constant("TOKEN_EXPIRED")) == CloseCode.TOKEN_EXPIRED
