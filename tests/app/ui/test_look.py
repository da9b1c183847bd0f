"""The console's look: fonts the console serves itself, with true regular and bold faces, given to
every launch through ``serve_options``."""

from __future__ import annotations

from gradio.themes.utils.fonts import WEIGHT_TO_FILENAME, Font, font_file_path

from app.ui.interface import serve_options
from app.ui.look import CSS, console_theme, look_options

MIN_FULL_FACE_BYTES = 20_000  # Gradio's SemiBold files are ~5 KB stubs of a few dozen glyphs


def _fonts() -> list[Font]:
    theme = console_theme()
    return [f for f in (*theme._font, *theme._font_mono) if isinstance(f, Font)]


def test_fonts_are_local_files_with_a_true_bold_face() -> None:
    fonts = _fonts()
    assert [f.name for f in fonts] == ["Source Sans Pro", "IBM Plex Mono"]
    for font in fonts:
        assert set(font.weights) == {400, 700}
        css = font.stylesheet()["css"]
        assert css and "http" not in css  # a relative URL: served by the console, no other host
        for weight in font.weights:
            path = font_file_path(font.name, weight)
            assert f"static/fonts/{path.parent.name}/{path.name}" in css
            assert path.stat().st_size > MIN_FULL_FACE_BYTES, f"{path.name} is not a full face"
            assert WEIGHT_TO_FILENAME[weight] in path.name


def test_every_launch_gets_the_look_and_keeps_no_extra_paths(store) -> None:
    options = serve_options(store)
    assert options["allowed_paths"] == []
    assert options["css"] == CSS and type(options["theme"]) is type(look_options()["theme"])
    assert "position: sticky" in CSS and "#queue-table th" in CSS and "white-space: nowrap" in CSS
