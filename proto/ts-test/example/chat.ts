// Example from docs/CLIENT-TS.md, type-checked in CI (`tsc --noEmit`), never run.
import { LatticeClient, Opcode, ServerError, ErrorCode, miniProgramTransport, SocketTaskLike } from "../../ts/index";

/** Browser: the global WebSocket is used by default. */
export async function browserChat(url: string, log: (line: string) => void): Promise<LatticeClient> {
  const client = new LatticeClient({ url, requestTimeoutMs: 5000 });
  client.onClose((reason) => log(`disconnected: ${reason}`));
  client.on(Opcode.Said, (said) => log(`[${said.room}] ${String(said.from)}: ${said.text}`));

  const welcome = await client.connect(); // sends Hello, checks the server's major version
  log(`session ${String(welcome.sessionId)} on server ${welcome.serverVersion}`);

  const joined = await client.call(Opcode.JoinRoom, { room: "lobby" }, Opcode.Joined);
  log(`${joined.members} in ${joined.room}`);
  try {
    await client.call(Opcode.Say, { room: "lobby", text: "hello" }, Opcode.Said);
  } catch (e) {
    if (e instanceof ServerError && e.code === ErrorCode.NOT_MEMBER) log("join the room first");
    else throw e;
  }
  return client;
}

/** The subset of the WeChat mini-game API used here (normally from the `wx` typings). */
declare const wx: { connectSocket(opts: { url: string }): SocketTaskLike };

/** WeChat mini-game: sockets come from wx.connectSocket. */
export function wechatClient(url: string): LatticeClient {
  return new LatticeClient({ url, transport: miniProgramTransport((o) => wx.connectSocket(o)) });
}
