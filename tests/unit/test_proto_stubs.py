"""The committed generated stubs match proto/ (regenerating them changes nothing)."""

from semirl.protogen import stale_files


def test_generated_stubs_are_up_to_date() -> None:
    assert stale_files() == [], "run `make proto` and commit the stubs"
