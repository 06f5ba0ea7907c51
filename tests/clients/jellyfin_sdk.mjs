// Drives a running nexus with Jellyfin's TypeScript SDK (@jellyfin/sdk, npm): discovery ->
// login -> list -> item -> playing/progress/stopped -> a ranged stream.
//
//   node jellyfin_sdk.mjs BASE_URL USERNAME PASSWORD      (BASE_URL: http://host:port/api/media)
//
// Run from a folder whose node_modules holds @jellyfin/sdk (tests/clients/run copies it there).
import { Jellyfin } from '@jellyfin/sdk';
import { getAuthenticationApi } from '@jellyfin/sdk/lib/utils/api/authentication-api.js';
import { getLibraryApi } from '@jellyfin/sdk/lib/utils/api/library-api.js';
import { getSessionApi } from '@jellyfin/sdk/lib/utils/api/session-api.js';
import { getSystemApi } from '@jellyfin/sdk/lib/utils/api/system-api.js';

const [url, username, password] = process.argv.slice(2);

function check(cond, what) {
    if (!cond) {
        console.error(`@jellyfin/sdk: ${what}`);
        process.exit(1);
    }
    console.log(`ok  ${what}`);
}

const jellyfin = new Jellyfin({
    clientInfo: { name: 'nexus-ci', version: '1.0.0' },
    deviceInfo: { name: 'ci-sdk', id: 'ci-sdk-device' },
});

// Discovery rejects servers that are not "Jellyfin Server" or older than 10.10.
const candidates = await jellyfin.discovery.getRecommendedServerCandidates(url);
const best = jellyfin.discovery.findBestServer(candidates);
check(best, `discovery: ${candidates.map((c) => `${c.address} score=${c.score}`).join(', ')}`);

const anonymous = jellyfin.createApi(best.address);
const auth = await getAuthenticationApi(anonymous).authenticateUserByName({
    authenticateUserByName: { Username: username, Pw: password },
});
check(auth.data.AccessToken && auth.data.ServerId, 'authenticateUserByName');
const api = jellyfin.createApi(best.address, auth.data.AccessToken);
const userId = auth.data.User.Id;

const info = await getSystemApi(api).getSystemInfo();
check(info.data.Id === auth.data.ServerId, 'System/Info Id == ServerId');

const items = await getLibraryApi(api).getItems({
    userId,
    recursive: true,
    includeItemTypes: ['Movie'],
    fields: ['MediaSources', 'Path'],
    sortBy: ['SortName'],
    limit: 50,
});
check(items.data.Items?.length > 0, `getItems: ${items.data.TotalRecordCount} movies`);
const movie = items.data.Items[0];

const item = await getLibraryApi(api).getItem({ itemId: movie.Id, userId });
check(item.data.Id === movie.Id && item.data.MediaSources?.length > 0, `getItem: ${item.data.Name}`);

const sessions = getSessionApi(api);
const info0 = { ItemId: movie.Id, PositionTicks: 0, CanSeek: true, PlayMethod: 'DirectPlay' };
await sessions.reportPlaybackStart({ playbackStartInfo: info0 });
await sessions.reportPlaybackProgress({ playbackProgressInfo: { ...info0, PositionTicks: 20_000_000 } });
await sessions.reportPlaybackStopped({ playbackStopInfo: { ...info0, PositionTicks: 20_000_000 } });
const after = await getLibraryApi(api).getItem({ itemId: movie.Id, userId });
check(after.data.UserData?.PlaybackPositionTicks === 20_000_000, 'playing/progress/stopped record the position');

const stream = await api.axiosInstance.get(`${api.basePath}/Videos/${movie.Id}/stream`, {
    params: { static: true, ApiKey: api.accessToken },
    headers: { Range: 'bytes=0-99' },
    responseType: 'arraybuffer',
});
check(stream.status === 206 && stream.data.byteLength === 100, 'ranged stream (206)');
console.log(`@jellyfin/sdk: all good as user ${userId}`);
