"""Datasets on disk as files: a folder of class subfolders (or ImageNet's train/ beside val/)
and a CSV of `path,label` rows. They stay a list of files that DataLoader workers decode."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch

from archlab.data.dataset import ImageData
from archlab.data.decode import IMAGE_EXTENSIONS, is_image_name
from archlab.data.errors import DataError, Issues

_TEST_DIRS = ("test", "val", "valid", "validation")


def load_path(path: Path, split: str, classes: Sequence[str] | None, in_chans: int,
              strict: bool, max_pixels: int | None) -> ImageData:
    """The files of a folder of class subfolders, or of a CSV of `path,label` rows."""
    if path.is_dir():
        data = _load_folder(path, split, classes, in_chans, strict)
    elif path.suffix.lower() in (".csv", ".txt", ".tsv"):
        if split not in ("train", "all", "test"):
            raise DataError(f"a CSV is a single split; got {split!r}")
        data = _load_csv(path, classes, in_chans, strict)
    else:
        raise DataError(f"{path} is neither a folder of class subfolders nor a CSV of "
                        "`path,label` rows")
    data.max_pixels = max_pixels
    return data


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_split_dirs(root: Path) -> dict[str, Path]:
    """{'train': dir, 'test': dir} for ImageNet's layout, {'all': root} for a plain one."""
    train = root / "train"
    tests = [root / t for t in _TEST_DIRS if (root / t).is_dir()]
    if train.is_dir() and _subdirs(train):
        out = {"train": train}
        if tests:
            out["test"] = tests[0]
        return out
    return {"all": root}


def _sort_labels(labels) -> list[str]:
    labels = list(labels)
    if labels and all(lbl.lstrip("-").isdigit() for lbl in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _load_folder(root: Path, split: str, classes: Sequence[str] | None, in_chans: int,
                 strict: bool) -> ImageData:
    dirs = folder_split_dirs(root)
    folder = _pick_split(dirs, split, root)
    class_dirs = _subdirs(folder)
    issues = Issues()
    if not class_dirs:
        loose = [p for p in folder.iterdir() if is_image_name(p)]
        what = f"{len(loose)} images but" if loose else "nothing, and"
        raise DataError(f"{folder} holds {what} no class subfolders. An image-folder dataset "
                        f"is {folder}/<class name>/<image files>"
                        + ("; to classify loose images use `archlab predict`." if loose else "."))
    names = [d.name for d in class_dirs]
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataError(f"{folder}: class folder(s) {', '.join(unknown)} are not classes "
                            f"of this model (it knows {', '.join(classes)})")
        class_list = list(classes)
    else:
        class_list = names
    files, targets, ignored = [], [], []
    for d in class_dirs:
        label = class_list.index(d.name)
        found = sorted(p for p in d.rglob("*") if p.is_file())
        images = [p for p in found if is_image_name(p)]
        ignored += [p for p in found if not is_image_name(p) and not p.name.startswith(".")]
        if not images:
            msg = (f"class folder {d} holds no images"
                   + (f" ({len(found)} other files)" if found else "")
                   + "; its class will never be seen in training: add images or remove it")
            if strict:
                raise DataError(msg)
            issues.add("empty class folders", msg)
        files += [str(p) for p in images]
        targets += [label] * len(images)
    for p in ignored:
        issues.add("ignored (not an image by its extension)", str(p))
    if not files:
        raise DataError(f"{folder}: none of its {len(class_dirs)} class folders holds an image "
                        f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ImageData(str(root), split, class_list, torch.tensor(targets, dtype=torch.long),
                     files=files, in_chans=in_chans, issues=issues,
                     spec={"source": str(folder)})


def _pick_split(dirs: dict[str, Path], split: str, root: Path) -> Path:
    if split in dirs:
        return dirs[split]
    if "all" in dirs and split in ("train", "all", "test"):
        # A plain folder is one split: whatever it is asked for, it is this folder.
        return dirs["all"]
    if split == "all":
        raise DataError(f"{root} is split into {', '.join(dirs)}; ask for one of them")
    raise DataError(f"{root} has no {split!r} split (it has {', '.join(dirs)}); a test split "
                    f"is a sibling folder named {' or '.join(_TEST_DIRS)}")


def _load_csv(path: Path, classes: Sequence[str] | None, in_chans: int,
              strict: bool) -> ImageData:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} cannot be read as a UTF-8 CSV ({e})") from None
    rows = list(csv.reader(text.splitlines()))
    header = ("path", "file", "filename", "image", "img")
    start = 0
    if (rows and len(rows[0]) >= 2 and rows[0][0].strip().lower() in header
            and not _resolve(path, rows[0][0]).is_file()):
        start = 1
    entries, issues = [], Issues()

    def problem(kind: str, msg: str) -> None:
        if strict:
            raise DataError(msg)
        issues.add(kind, msg)

    for line, row in enumerate(rows[start:], start=start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            problem("bad rows", f"{path}, line {line}: expected `path,label`, got "
                                f"{len(row)} fields: {','.join(row)[:80]}")
            continue
        file, label = row[0].strip(), row[1].strip()
        if not label:
            problem("rows without a label", f"{path}, line {line}: {file} has no label")
            continue
        if classes is not None and label not in classes:
            problem("unknown labels", f"{path}, line {line}: label {label!r} is not one of "
                                      f"the classes ({', '.join(classes)})")
            continue
        resolved = _resolve(path, file)
        if not resolved.is_file():
            problem("missing files", f"{path}, line {line}: {resolved} does not exist")
            continue
        entries.append((str(resolved), label))
    if not entries:
        raise DataError(f"{path}: no usable `path,label` rows"
                        + (f" ({'; '.join(issues.summary()[:4])})" if issues else ""))
    class_list = list(classes) if classes is not None else _sort_labels({e[1] for e in entries})
    index = {c: i for i, c in enumerate(class_list)}
    return ImageData(str(path), "all", class_list,
                     torch.tensor([index[e[1]] for e in entries], dtype=torch.long),
                     files=[e[0] for e in entries], in_chans=in_chans, issues=issues,
                     spec={"source": str(path)})


def _resolve(csv_path: Path, file: str) -> Path:
    p = Path(file).expanduser()
    return p if p.is_absolute() else csv_path.parent / p

