"""A recording fake of Outlook's COM ``Outlook.Application`` (the COM object cannot exist
on Linux), used by test_outlook.py and test_migration_shims.py."""

from __future__ import annotations

from typing import Any


class FakePropertyAccessor:
    def __init__(self) -> None:
        self.properties: dict[str, Any] = {}

    def SetProperty(self, name: str, value: Any) -> None:
        self.properties[name] = value


class FakeAttachment:
    def __init__(self, source: str) -> None:
        self.source = source
        self.PropertyAccessor = FakePropertyAccessor()


class FakeAttachments:
    def __init__(self) -> None:
        self.added: list[FakeAttachment] = []

    def Add(self, source: str, *args: Any) -> FakeAttachment:
        assert not args, args
        attachment = FakeAttachment(source)
        self.added.append(attachment)
        return attachment


class FakeMailItem:
    """Records every property assignment and method call."""

    def __init__(self) -> None:
        object.__setattr__(self, "assigned", {})
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "Attachments", FakeAttachments())

    assigned: dict[str, Any]
    calls: list[tuple[Any, ...]]
    Attachments: FakeAttachments

    def __setattr__(self, name: str, value: Any) -> None:
        self.assigned[name] = value

    def Display(self, modal: bool = False) -> None:
        self.calls.append(("Display", modal))

    def Send(self) -> None:
        self.calls.append(("Send",))


class FakeOutlookApplication:
    def __init__(self) -> None:
        self.created: list[int] = []
        self.items: list[FakeMailItem] = []

    def CreateItem(self, kind: int) -> FakeMailItem:
        self.created.append(kind)
        item = FakeMailItem()
        self.items.append(item)
        return item
