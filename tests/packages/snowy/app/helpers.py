"""A module with no blueprint: the scan imports it and registers nothing."""

GREETING = "powder day"
