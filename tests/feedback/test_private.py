"""Private directories: every one `private_dirs` creates is 0700; existing ones keep theirs."""

import stat

from feedback.private import private_dirs


def test_each_directory_it_creates_is_private(tmp_path):
    (tmp_path / "shared").mkdir(mode=0o755)
    made = private_dirs(tmp_path / "shared" / "data" / "adapters")
    assert made.is_dir()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode)
             for p in (tmp_path / "shared", made.parent, made)}
    assert modes == {"shared": 0o755, "data": 0o700, "adapters": 0o700}
    assert private_dirs(made) == made  # already there: nothing to do
