"""The listening socket of a bjoern worker, and how it stops taking connections without resetting any.

Closing a listening socket resets every connection still in its accept queue, and a
client whose SYN the kernel answered a moment before sees ``ECONNRESET``. A worker that
leaves therefore first makes the kernel drop new SYNs on its socket
(:func:`refuse_new_connections`: a classic BPF socket filter, which an unprivileged
process may attach to its own socket), answers what is already queued, and only then
lets go of the socket (:func:`release`). A client whose SYN was dropped sends it again
after about a second; by then the socket is gone, so the retransmission goes to another
listener of the same ``SO_REUSEPORT`` group, or is refused when none is left.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)

# The filter sees a TCP segment from its header on: byte 13 holds the flags.
TCP_FLAGS_OFFSET = 13
TCP_SYN = 0x02
TCP_ACK = 0x10

BPF_LD_B_ABS = 0x30
BPF_ALU_AND_K = 0x54
BPF_JMP_JEQ_K = 0x15
BPF_RET_K = 0x06
KEEP_WHOLE_PACKET = 0xFFFFFFFF
DROP = 0

# struct tcp_info: a listening socket reports its accept queue's length in tcpi_unacked.
TCP_INFO_SIZE = 104
TCPI_UNACKED_OFFSET = 24


def drop_syn_program() -> list[tuple[int, int, int, int]]:
    """A segment with SYN set and ACK clear (a new connection) is dropped; all else passes."""
    return [
        (BPF_LD_B_ABS, 0, 0, TCP_FLAGS_OFFSET),
        (BPF_ALU_AND_K, 0, 0, TCP_SYN | TCP_ACK),
        (BPF_JMP_JEQ_K, 0, 1, TCP_SYN),
        (BPF_RET_K, 0, 0, DROP),
        (BPF_RET_K, 0, 0, KEEP_WHOLE_PACKET),
    ]


def refuse_new_connections(sock: socket.socket) -> None:
    """From now on the kernel queues no new connection on ``sock``; queued ones stay."""
    program = drop_syn_program()
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    # struct sock_fprog: the instruction count, then a pointer to the instructions
    # (the kernel copies them during the call, so the buffer only has to outlive it).
    fprog = struct.pack("HP", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def queued_connections(sock: socket.socket) -> int:
    """How many connections wait in ``sock``'s accept queue (0 once the socket is released)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    except OSError:
        return 0
    return int(struct.unpack_from("I", info, TCPI_UNACKED_OFFSET)[0])


def release(sock: socket.socket) -> None:
    """Let go of the listening socket while bjoern's event loop still holds its descriptor.

    An unbound socket takes over the descriptor (``dup2`` closes the listener in the same
    step), so the loop, which keeps serving its open connections, never sees an error or
    a hang-up on it and never accepts again.
    """
    placeholder = socket.socket(sock.family, socket.SOCK_STREAM)
    try:
        os.dup2(placeholder.fileno(), sock.fileno())
    finally:
        placeholder.close()
