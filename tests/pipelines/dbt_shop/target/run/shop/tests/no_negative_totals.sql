
    
    select
      count(*) as failures,
      count(*) != 0 as should_warn,
      count(*) != 0 as should_error
    from (
      
    
  -- A singular test: any row returned is a failure.
select * from "test"."opsdata_try"."customer_totals" where total < 0
  
  
      
    ) dbt_internal_test