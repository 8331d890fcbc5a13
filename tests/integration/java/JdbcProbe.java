// Connects with the PostgreSQL JDBC driver, runs prepared statements with
// parameters often enough that the driver switches to named server-side
// statements (prepareThreshold, default 5), and prints every result.
// Usage: java -cp .:postgresql.jar JdbcProbe JDBC_URL USER   (password in $PROBE_PASSWORD)
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import org.postgresql.PGStatement;

public class JdbcProbe {
    static String hex(byte[] b) {
        if (b == null) return "null";
        StringBuilder sb = new StringBuilder("\\x");
        for (byte x : b) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    static void print(String tag, ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        while (rs.next()) {
            StringBuilder sb = new StringBuilder(tag);
            for (int i = 1; i <= md.getColumnCount(); i++) {
                String type = md.getColumnTypeName(i);
                String value = type.equals("bytea") ? hex(rs.getBytes(i)) : rs.getString(i);
                sb.append(i == 1 ? ": " : " | ").append(type).append('=').append(value);
            }
            System.out.println(sb);
        }
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", System.getenv("PROBE_PASSWORD"));
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            try (PreparedStatement ps = c.prepareStatement(
                    "select id, name, floor from wards where floor >= ? and id <= ? order by id")) {
                for (int run = 0; run < 8; run++) {
                    ps.setInt(1, run % 4);
                    ps.setInt(2, 10 - run);
                    try (ResultSet rs = ps.executeQuery()) {
                        print("wards run " + run + " server-prepared=" + ps.unwrap(PGStatement.class).isUseServerPrepare(), rs);
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "select ?::numeric * 2, ?::text || '!', ?::timestamp + interval '1 day', ?::bytea, ?::int is null")) {
                for (int run = 0; run < 7; run++) {
                    ps.setBigDecimal(1, new java.math.BigDecimal("12.5" + run));
                    ps.setString(2, "héllo " + run);
                    ps.setTimestamp(3, java.sql.Timestamp.valueOf("2024-02-28 10:00:0" + run));
                    ps.setBytes(4, new byte[] {0, (byte) run, (byte) 0xff});
                    if (run % 2 == 0) ps.setNull(5, java.sql.Types.INTEGER); else ps.setInt(5, run);
                    try (ResultSet rs = ps.executeQuery()) {
                        print("types run " + run, rs);
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.execute("create temp table jdbc_probe (id int, v text)");
                try (PreparedStatement ins = c.prepareStatement("insert into jdbc_probe values (?, ?)")) {
                    for (int i = 0; i < 20; i++) {
                        ins.setInt(1, i);
                        ins.setString(2, "v" + i);
                        ins.addBatch();
                    }
                    System.out.println("batch inserted " + ins.executeBatch().length);
                }
                c.rollback();
                try {
                    st.executeQuery("select * from jdbc_probe");
                } catch (SQLException e) {
                    System.out.println("after rollback: " + e.getSQLState());
                    c.rollback();
                }
                try (ResultSet rs = st.executeQuery("select 1/0")) {
                    System.out.println("no error?");
                } catch (SQLException e) {
                    System.out.println("error: " + e.getSQLState());
                    c.rollback();
                }
                try (ResultSet rs = st.executeQuery("select code, description from diagnosis_codes order by code")) {
                    print("codes", rs);
                }
            }
        }
        System.out.println("done");
    }
}
