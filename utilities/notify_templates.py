"""The e-mail bodies of notifications: Jinja2 templates in ``templates/`` rendered to text and HTML.

Kept apart from ``notify.py`` (which decides who is told and delivers) because this half is
pure, strings in and strings out, and because it is the only half that needs jinja2: that
import happens in ``build_environment``, so a cron run that sends no mail never pays for it. A template is ``templates/<name>.txt.j2`` with its twin ``<name>.html.j2``; the
``leader``, ``na`` and ``labelize`` filters are ``utilities/text.py``'s formatters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from utilities.install_paths import TEMPLATES_DIR
from utilities.text import format_value, labelize, leader

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

#: Used when a notification names no template, or one that does not exist.
GENERIC_TEMPLATE = "generic"


def _autoescape(template_name: str | None) -> bool:
    return template_name is not None and template_name.endswith(".html.j2")


def build_environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    """Jinja2 environment for the e-mail templates; HTML is autoescaped, text is not.

    ``ChainableUndefined`` lets ``{{ drive.serial }}`` on a missing ``drive`` render as missing
    instead of raising, which is what keeps a report with gaps sendable.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=_autoescape,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["leader"] = leader
    env.filters["na"] = format_value
    env.filters["labelize"] = labelize
    return env


def render_email(env: jinja2.Environment, template: str | None, variables: Mapping[str, Any]) -> tuple[str, str]:
    """Return (plain text, HTML) bodies of ``template``, falling back to the generic pair if
    either is missing (``None`` means the generic pair).

    Both parts come from the same template name so the two views of one mail never disagree.
    """
    import jinja2

    name = template or GENERIC_TEMPLATE
    try:
        text_template = env.get_template(f"{name}.txt.j2")
        html_template = env.get_template(f"{name}.html.j2")
    except jinja2.TemplateNotFound:
        if name == GENERIC_TEMPLATE:
            raise
        log.warning("e-mail template %r not found, using the generic template", name)
        text_template = env.get_template(f"{GENERIC_TEMPLATE}.txt.j2")
        html_template = env.get_template(f"{GENERIC_TEMPLATE}.html.j2")
    return text_template.render(variables), html_template.render(variables)
