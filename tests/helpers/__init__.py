"""Helpers the tests share: paths, file writers, prepared folders, chats, requests, report runs."""
